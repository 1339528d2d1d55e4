"""Decoding settings: one dataclass, validated, mirrored by the CLI flags and the YAML keys."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from dialogtune.errors import ConfigError
from dialogtune.seeds import check_seed

# How a model computes (resolved by dialogtune.models.precision; listed here, torch-free, for configs).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "generate")
MAX_BEAMS = 256  # wider than any decoding uses; each beam costs a copy of the generation state
_MAX_INT = 2**31 - 1
_INT_FIELDS = ("max_new_tokens", "top_k", "no_repeat_ngram_size", "batch_size", "max_dialogue_tokens")
DEFAULT_LOOKAHEAD = 2  # draft tokens per sequence and step (dialogtune.generation.lookup)
MAX_LOOKAHEAD = 64
DEFAULT_DRAFT_MEMORY = 64  # recent outputs drafts may copy from (lookup.Recent)
MAX_DRAFT_MEMORY = 1024  # each remembered token costs ~800 bytes: 1024 outputs of 512 tokens ~420 MB
MAX_PROCESSES = 256  # each process holds a key/value cache: more than cores is only memory
# Settings that change how fast, never what: left out of GenerationSettings.identity(), so a
# resumed run, an experiment stage or a batch job may change them.
THROUGHPUT_ONLY = ("processes", "draft_memory")


@dataclass
class GenerationSettings:
    """How summaries are decoded; greedy with the notebook's ``max_new_tokens=200`` by default."""

    max_new_tokens: int = field(default=200, metadata={"help": "longest summary, in tokens"})
    num_beams: int = field(default=1, metadata={"help": "beam search width; 1 is greedy"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy/beam search"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling: keep this much probability mass"})
    top_k: int = field(default=50, metadata={"help": "sampling: keep the k most likely tokens (0: all)"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "penalise tokens already generated"})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": "forbid repeating n-grams of this size"})
    batch_size: int = field(
        default=16,
        metadata={
            "help": "sequences decoded together (continuous batching: a finished one makes room at once)"
        },
    )
    max_dialogue_tokens: int | None = field(
        default=1024, metadata={"help": "dialogues are cut to this many tokens (the instruction is kept)"}
    )
    sort_by_length: bool = field(default=True, metadata={"help": "start the longest prompts first"})
    seed: int = field(default=0, metadata={"help": "seed for sampling"})
    engine: str = field(
        default="auto",
        metadata={
            "help": "auto (continuous batching for decoder-only models, outputs independent of the batch) "
            "or generate (transformers' generate in static batches, the reference implementation)"
        },
    )
    lookahead: int = field(
        default=DEFAULT_LOOKAHEAD,
        metadata={
            "help": "while few sequences decode, also check up to this many draft tokens per step, "
            "copied from the dialogue (prompt lookup); the output is the same, token for token; 0: off"
        },
    )
    draft_memory: int = field(
        default=DEFAULT_DRAFT_MEMORY,
        metadata={
            "help": "a sequence whose own text gives no draft copies one from this many of the model's "
            "latest outputs (summaries share their phrasing); the output is the same; 0: off"
        },
    )
    processes: int = field(
        default=0,
        metadata={
            "help": "engine processes on a CPU, one core each, each decoding its share of the dialogues "
            "(the summaries are the same whatever the number); 0: auto, one per core when each gets at "
            "least a full batch (else one process with every core)"
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 where the hardware computes it natively: CPUs with AVX512-BF16/AMX, "
            "GPUs with bf16; else fp32), fp32, bf16, fp16 (GPU, never T5)"
        },
    )

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "num_beams": self.num_beams >= 1,
            "temperature": self.temperature > 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= 0,
            "repetition_penalty": self.repetition_penalty > 0,
            "no_repeat_ngram_size": self.no_repeat_ngram_size >= 0,
            "batch_size": self.batch_size >= 1,
            "max_dialogue_tokens": self.max_dialogue_tokens is None or self.max_dialogue_tokens >= 1,
            "precision": self.precision in PRECISIONS,
            "engine": self.engine in ENGINES,
            "lookahead": 0 <= self.lookahead <= MAX_LOOKAHEAD,
            "draft_memory": 0 <= self.draft_memory <= MAX_DRAFT_MEMORY,
            "processes": 0 <= self.processes <= MAX_PROCESSES,
        }
        # Beyond these, torch's integer arguments overflow (a traceback), or memory runs out first.
        checks["num_beams"] = checks["num_beams"] and self.num_beams <= MAX_BEAMS
        for key in _INT_FIELDS:
            checks[key] = checks[key] and (getattr(self, key) or 0) <= _MAX_INT
        for key, ok in checks.items():
            value = getattr(self, key)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"generation.{key} has an invalid value: {value!r}")
        check_seed("generation.seed", self.seed)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' ``generate``."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # keep the model's sampling defaults from leaking into greedy runs (and warning)
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that can change a summary: what a resumed run must match."""
        return {k: v for k, v in self.to_dict().items() if k not in THROUGHPUT_ONLY}
