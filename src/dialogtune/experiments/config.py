"""The experiment config: one baseline, any list of variants, one evaluation, one report.

```yaml
name: quickstart
output_dir: runs/quickstart          # relative to the working directory
evaluation:                          # the SAME dialogues and settings for every model
  data: {source: ../shared/data/dialogsum, split: validation, limit: 50}
  generation: {max_new_tokens: 64}
baseline: {name: zero-shot, model: smollm2-135m-instruct}
variants:
  - name: lora
    config: ../configs/smollm2-lora-cpu.yaml   # a training config; relative to this file
    set: {training.max_steps: 100}             # its --set overrides
  - name: other-model
    model: google/flan-t5-small                # no config: evaluated zero-shot
```

Every model is evaluated with ``evaluation.prompt``; trained variants are trained with it too
(it replaces the prompt of their training config), so the comparison changes only the weights.
Sections reuse the blocks' own dataclasses (``DataConfig``, ``GenerationSettings``,
``PromptTemplate``, ``RougeSettings``), which validate themselves; unknown keys anywhere are a
one-line :class:`ConfigError` naming the key. YAML, ``--set`` and the builder are the config
layer's (:mod:`dialogtune.config`), the same as for training configs.

:class:`EvaluationSpec` is the one description of an evaluation: ``dialogtune evaluate`` builds it
from flags, an experiment from its ``evaluation:`` section, and the runner's stage key hashes it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.config import apply_set, build, flatten, read_yaml_file
from dialogtune.data.config import DataConfig
from dialogtune.errors import ConfigError
from dialogtune.evaluation.bootstrap import MAX_RESAMPLES
from dialogtune.evaluation.rouge import RougeSettings
from dialogtune.generation.settings import GenerationSettings
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import PromptTemplate
from dialogtune.seeds import check_seed

__all__ = [
    "EvaluationSpec",
    "ExperimentConfig",
    "ModelEntry",
    "ReportSettings",
    "apply_set",
    "flatten",
    "load_experiment",
    "resolve_config_path",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # names become directory names


@dataclass
class EvaluationSpec:
    """Everything that determines an evaluation's numbers: what every model is measured on, and how.

    Precision is ``generation.precision`` (it decides how the weights compute).
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(split="test"))
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    rouge: RougeSettings = field(default_factory=RougeSettings)
    n_resamples: int = field(default=1000, metadata={"help": "bootstrap resamples for the CIs"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ... (not part of the numbers)"})

    def __post_init__(self) -> None:
        if not 1 <= self.n_resamples <= MAX_RESAMPLES:
            raise ConfigError(
                f"evaluation.n_resamples must be from 1 to {MAX_RESAMPLES:,}, got {self.n_resamples}"
            )
        check_seed("evaluation.seed", self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What makes two evaluations' numbers comparable (the device is not part of it)."""
        return {
            "data": self.data.to_dict(),
            "generation": self.generation.identity(),
            "prompt": self.prompt.to_dict(),
            "rouge": self.rouge.to_dict(),
            "bootstrap": {"n_resamples": self.n_resamples, "seed": self.seed},
        }


@dataclass
class ModelEntry:
    """A model in the comparison: zero-shot (``model``) or trained (``config`` + ``set``)."""

    name: str
    model: str | None = field(default=None, metadata={"help": "model spec evaluated as is (zero-shot)"})
    config: str | dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "training config: a YAML path (relative to the experiment file) or an inline mapping"
        },
    )
    set: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for the training config, {dotted.key: value}"}
    )

    def __post_init__(self) -> None:
        where = f"model entry '{self.name}'"
        if not _NAME_RE.fullmatch(str(self.name)):
            raise ConfigError(
                f"name must be letters, digits, '.', '_' or '-' (a directory name), got {self.name!r}"
            )
        if (self.model is None) == (self.config is None):
            raise ConfigError(f"{where}: give exactly one of model (zero-shot) or config (trained)")
        if self.config is not None and not isinstance(self.config, (str, dict)):
            raise ConfigError(f"{where}: config must be a YAML path or a mapping, got {self.config!r}")
        if self.model is not None and not self.model.strip():
            raise ConfigError(f"{where}: model must be a non-empty model spec")
        if self.set and self.config is None:
            raise ConfigError(f"{where}: set overrides a training config; add config")
        if not isinstance(self.set, dict):
            raise ConfigError(f"{where}: set must be a mapping of dotted keys to values")
        self.set = flatten(self.set)

    @property
    def trains(self) -> bool:
        return self.config is not None


@dataclass
class ReportSettings:
    examples: int = field(
        default=3, metadata={"help": "side-by-side examples where the models disagree most"}
    )
    random_examples: int = field(default=3, metadata={"help": "plus a seeded random sample"})
    seed: int = 0
    n_resamples: int = field(default=1000, metadata={"help": "paired bootstrap resamples"})
    title: str | None = None

    def __post_init__(self) -> None:
        for key in ("examples", "random_examples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"report.{key} must be >= 0, got {getattr(self, key)}")
        if not 1 <= self.n_resamples <= MAX_RESAMPLES:
            raise ConfigError(
                f"report.n_resamples must be from 1 to {MAX_RESAMPLES:,}, got {self.n_resamples}"
            )
        check_seed("report.seed", self.seed)


@dataclass
class ExperimentConfig:
    """A whole study (``dialogtune run EXPERIMENT.yaml``)."""

    name: str = "experiment"
    output_dir: str = "runs/experiment"
    baseline: ModelEntry = field(default_factory=lambda: ModelEntry(name="zero-shot", model=DEFAULT_MODEL))
    variants: list[ModelEntry] = field(default_factory=list)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    report: ReportSettings = field(default_factory=ReportSettings)
    base_dir: str = field(
        default=".",
        metadata={
            "help": "where relative training-config paths are found "
            "(set to the experiment file's folder on load)"
        },
    )

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ConfigError(f"model name '{entry.name}' is used twice: names must be unique")
            seen.add(entry.name)
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir must be a non-empty path")

    @property
    def models(self) -> list[ModelEntry]:
        return [self.baseline, *self.variants]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (or start from defaults), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    base_dir = Path(".")
    if path is not None:
        raw = read_yaml_file(path, "experiment file")
        base_dir = Path(path).resolve().parent
    for item in overrides or []:
        apply_set(raw, item)
    if "base_dir" in raw:
        raise ConfigError("unknown key base_dir (it is set from the experiment file's location)")
    evaluation = raw.get("evaluation")
    if isinstance(evaluation, dict) and "dtype" in evaluation:
        raise ConfigError("evaluation.dtype is now evaluation.generation.precision (auto, fp32, bf16, fp16)")
    raw["base_dir"] = str(base_dir)
    return build(ExperimentConfig, raw)


def resolve_config_path(entry: ModelEntry, base_dir: str | Path) -> Path:
    """A variant's training-config file: relative to the experiment file, else to the cwd."""
    text = str(entry.config)
    for candidate in (Path(base_dir) / text, Path(text)):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"variant '{entry.name}': training config not found: {text} "
        f"(looked in {base_dir} and the working directory)"
    )
