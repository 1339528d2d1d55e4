"""What a batch job is: the model work (identical on every engine) and how to run it.

:class:`ModelJob` is everything that decides the summaries: model, adapter (merged or not), prompt
and generation settings (precision included). :class:`BatchConfig` adds the inputs, the output directory and the
engine. Only the fields that change outputs or shard boundaries go into the job key that a
rerun must match (see ``output.job_identity``); engine, workers and threads do not, so a job
started with ``--engine local`` can be finished with ``--engine ray``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dialogtune.errors import ConfigError
from dialogtune.generation import GenerationSettings
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import PromptTemplate

ENGINES = ("local", "ray")
FORMATS = ("parquet", "jsonl")
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class ModelJob:
    """The model side of a job; sent as-is to every Ray actor (it pickles)."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    merge: str = "auto"  # fold the adapter into the base weights (dialogtune.models.inference)
    device: str = "auto"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)


@dataclass(frozen=True)
class BatchConfig:
    """A ``dialogtune batch`` run.

    Attributes:
        input: a data file, a directory of them, or a glob (``.jsonl``, ``.json``, ``.parquet``, ``.csv``).
        output: the job's directory (shards, errors, manifest); a rerun resumes it.
        job: model, adapter, prompt and generation settings.
        engine: ``local`` (this process) or ``ray`` (Ray Data actors).
        ray_address: a running cluster (``auto``, ``ray://host:10001``); ``None`` uses ``$RAY_ADDRESS``
            or starts a local cluster.
        num_workers: Ray actors, one model each (default: the CPUs, or GPUs, over the per-worker share).
        threads_per_worker: torch threads per model (default: torch's own for local, 1 for Ray).
        gpus_per_worker: GPUs per Ray actor (``1`` for one model per GPU; fractions share a GPU).
        shard_size: input rows per output shard: the unit of work, of resuming and of a model call.
        limit: only the first N input rows (for a trial run).
        output_format: shard files as ``parquet`` or ``jsonl``.
    """

    input: str
    output: str
    job: ModelJob = field(default_factory=ModelJob)
    engine: str = "local"
    ray_address: str | None = None
    num_workers: int | None = None
    threads_per_worker: int | None = None
    gpus_per_worker: float = 0.0
    shard_size: int = DEFAULT_SHARD_SIZE
    limit: int | None = None
    output_format: str = "parquet"
    id_column: str = "id"
    dialogue_column: str = "dialogue"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"batch.engine must be one of {', '.join(ENGINES)}, got '{self.engine}'")
        if self.output_format not in FORMATS:
            raise ConfigError(f"batch.format must be one of {', '.join(FORMATS)}, got '{self.output_format}'")
        for key in ("input", "output", "id_column", "dialogue_column"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"batch.{key} must be a non-empty string, got {value!r}")
        for key in ("num_workers", "threads_per_worker", "limit"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"batch.{key} must be a positive integer, got {value!r}")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ConfigError(f"batch.shard_size must be a positive integer, got {self.shard_size!r}")
        if not isinstance(self.gpus_per_worker, (int, float)) or self.gpus_per_worker < 0:
            raise ConfigError(f"batch.gpus_per_worker must be >= 0, got {self.gpus_per_worker!r}")
        if self.engine == "local":
            # Silently ignoring these would let a user believe they ran in parallel.
            for key, flag in (
                ("num_workers", "--num-workers"),
                ("ray_address", "--ray-address"),
                ("gpus_per_worker", "--gpus-per-worker"),
            ):
                value = getattr(self, key)
                if value and not (key == "num_workers" and value == 1):
                    raise ConfigError(
                        f"{flag} is for --engine ray; the local engine runs one model in this process"
                    )
