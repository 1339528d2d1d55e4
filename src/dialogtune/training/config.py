"""The training config: typed dataclasses, loaded from YAML, overridable with ``--set a.b=c``.

One :class:`TrainConfig` says everything that determines a run; its resolved form is saved
as ``config.yaml`` in the run directory. Every section validates itself in
``__post_init__``; the config layer (:mod:`dialogtune.config`: YAML 1.2, ``--set``, the builder)
turns a YAML mapping into the dataclasses, naming the key at fault (``training.lerning_rate``)
in a one-line :class:`ConfigError`.

The method's settings are the section named after it (``lora:``, ``dora:``, ``ia3:``,
``prompt_tuning:``), read by the method's own settings class (:mod:`dialogtune.methods`).
Sections of other methods may be present (validated, unused); the resolved config keeps the
active method's section only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.config import apply_overrides, apply_set, build, parse_yaml, read_yaml_file
from dialogtune.data.config import DEFAULT_SOURCE, DataConfig
from dialogtune.errors import ConfigError
from dialogtune.generation.settings import GenerationSettings
from dialogtune.io import read_json_file
from dialogtune.methods import default_settings, get_method, method_names, settings_section
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import PromptTemplate
from dialogtune.seeds import check_seed

__all__ = [  # the config layer's functions are reachable from here too
    "EvalSettings",
    "SplitSelection",
    "TrainConfig",
    "TrainData",
    "TrainingSettings",
    "apply_overrides",
    "apply_set",
    "build",
    "build_config",
    "load_config",
    "parse_yaml",
    "resolve_paths",
]

ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)


@dataclass
class SplitSelection:
    """One split of ``data.source`` and how it is subsampled (see :class:`DataConfig`)."""

    split: str | None = field(
        default=None, metadata={"help": "default: train for data.train, validation for data.eval"}
    )
    limit: int | None = field(default=None, metadata={"help": "keep the first N records (applied last)"})
    every: int | None = field(
        default=None, metadata={"help": "keep records whose index % K == 0 (the notebook: 100)"}
    )
    sample: int | None = field(default=None, metadata={"help": "seeded random sample of N records"})


@dataclass
class TrainData:
    """Where training and validation records come from, and how long examples may be."""

    source: str = field(
        default=DEFAULT_SOURCE,
        metadata={
            "help": "hub id, directory of split files or one file; relative paths are resolved against the cwd"
        },
    )
    train: SplitSelection = field(default_factory=SplitSelection)
    eval: SplitSelection | None = field(
        default_factory=lambda: SplitSelection(split="validation", limit=100),
        metadata={"help": "validation split for eval loss/ROUGE; null: none"},
    )
    seed: int = 0
    id_column: str = "id"
    dialogue_column: str = "dialogue"
    summary_column: str | None = None
    max_dialogue_tokens: int | None = field(
        default=512, metadata={"help": "dialogues are cut to this many tokens (the instruction is kept)"}
    )
    max_target_tokens: int = field(default=128, metadata={"help": "summaries are cut to this many tokens"})

    def __post_init__(self) -> None:
        for name, default in (("train", "train"), ("eval", "validation")):
            selection = getattr(self, name)
            if selection is not None and selection.split is None:
                selection.split = default
        if self.max_dialogue_tokens is not None and self.max_dialogue_tokens < 1:
            raise ConfigError(
                f"data.max_dialogue_tokens must be positive or null, got {self.max_dialogue_tokens}"
            )
        if self.max_target_tokens < 2:
            raise ConfigError(f"data.max_target_tokens must be at least 2, got {self.max_target_tokens}")
        check_seed("data.seed", self.seed)
        for name in ("train", "eval"):
            if getattr(self, name) is not None:
                self.data_config(name)  # DataConfig validates split names and counts

    def data_config(self, which: str) -> DataConfig:
        """The :class:`DataConfig` for ``train`` or ``eval``."""
        selection: SplitSelection = getattr(self, which)
        try:
            return DataConfig(
                source=self.source,
                split=str(selection.split),
                limit=selection.limit,
                every=selection.every,
                sample=selection.sample,
                seed=self.seed,
                id_column=self.id_column,
                dialogue_column=self.dialogue_column,
                summary_column=self.summary_column,
            )
        except ConfigError as exc:  # name the key as it is written in the training config
            raise ConfigError(str(exc).replace("data.", f"data.{which}.", 1)) from exc


@dataclass
class TrainingSettings:
    """Optimisation: what transformers' ``TrainingArguments`` receive."""

    epochs: float = 1.0
    max_steps: int = field(default=-1, metadata={"help": "stop after N optimizer steps (-1: run all epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per forward pass"})
    eval_batch_size: int | None = None
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    warmup_steps: float = field(
        default=0.0, metadata={"help": "steps (>= 1) or a fraction of all steps (< 1)"}
    )
    max_grad_norm: float = 1.0
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "train against (1 - x) * the summary token + x spread over the vocabulary "
            "(transformers' label_smoothing_factor); the eval loss stays plain cross-entropy"
        },
    )
    neftune_noise_alpha: float | None = field(
        default=None,
        metadata={
            "help": "NEFTune: uniform noise of scale alpha / sqrt(length * dim) on the input embeddings "
            "while training (the paper uses 5-15); null: off"
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 autocast where the hardware has bf16, else fp32), fp32, bf16, fp16 (never for T5)"
        },
    )
    frozen_weights: str = field(
        default="auto",
        metadata={
            "help": "a PEFT method's frozen Linear weights: auto (bf16 when training in bf16 and the method's "
            "results stay the same: LoRA, IA3, prompt tuning), fp32, bf16"
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations: less memory, ~30% slower"}
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the repeated blocks for training steps: ~1.2-1.6x faster steps "
            "after a one-time compile (~45 s on 2 CPU cores)"
        },
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "batch examples of similar length (less padding)"}
    )
    selective_loss: bool = field(
        default=True,
        metadata={"help": "causal models: compute lm_head and the loss only where labels are learned"},
    )
    logging_steps: int = 10
    save_steps: int | None = field(
        default=None,
        metadata={"help": "checkpoint every N steps (default: at every evaluation, else every 100 steps)"},
    )
    save_total_limit: int = field(
        default=2, metadata={"help": "checkpoints kept (the best one is always kept)"}
    )
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints/ after a finished run"})
    num_workers: int = 0
    optimizer: str = "adamw_torch"
    fsdp: str = field(
        default="",
        metadata={
            "help": "multi-GPU sharding, e.g. 'full_shard auto_wrap' (transformers' fsdp option); '' for DDP"
        },
    )
    deepspeed: str | None = field(default=None, metadata={"help": "path to a DeepSpeed JSON config (ZeRO)"})

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps == -1 or self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "eval_batch_size": self.eval_batch_size is None or self.eval_batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "neftune_noise_alpha": self.neftune_noise_alpha is None or self.neftune_noise_alpha > 0,
            "logging_steps": self.logging_steps >= 1,
            "save_total_limit": self.save_total_limit >= 1,
            "save_steps": self.save_steps is None or self.save_steps >= 1,
            "num_workers": self.num_workers >= 0,
            "precision": self.precision in ("auto", "fp32", "bf16", "fp16"),
            "frozen_weights": self.frozen_weights in ("auto", "fp32", "bf16"),
            "lr_scheduler": self.lr_scheduler in SCHEDULERS,
        }
        for key, ok in checks.items():
            value = getattr(self, key)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"training.{key} has an invalid value: {value!r}")
        if self.deepspeed is not None:  # transformers reads it much later, with a traceback if broken
            read_json_file(self.deepspeed, ConfigError)


@dataclass
class EvalSettings:
    """Evaluation during training, early stopping and which checkpoint is kept."""

    strategy: str = field(default="epoch", metadata={"help": "steps, epoch or no"})
    steps: int | None = field(default=None, metadata={"help": "evaluate every N steps (strategy: steps)"})
    rouge_dialogues: int = field(
        default=0,
        metadata={
            "help": "also generate for the first N validation dialogues and report ROUGE (0: loss only)"
        },
    )
    metric: str = field(default="loss", metadata={"help": "loss, rouge1, rouge2, rougeL or rougeLsum"})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop after N evaluations without improvement (null: never)"}
    )
    early_stopping_threshold: float = 0.0
    load_best: bool = field(
        default=True, metadata={"help": "save the best checkpoint's weights, not the last"}
    )
    on_start: bool = field(
        default=False, metadata={"help": "also evaluate before the first step (the baseline)"}
    )
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=64, batch_size=8)
    )

    def __post_init__(self) -> None:
        if self.strategy not in ("steps", "epoch", "no"):
            raise ConfigError(f"eval.strategy must be steps, epoch or no, got '{self.strategy}'")
        if self.strategy == "steps" and (self.steps is None or self.steps < 1):
            raise ConfigError("eval.steps must be a positive integer when eval.strategy is steps")
        if self.metric not in ("loss", *ROUGE_METRICS):
            raise ConfigError(
                f"eval.metric must be loss or one of {', '.join(ROUGE_METRICS)}, got '{self.metric}'"
            )
        if self.metric != "loss" and self.rouge_dialogues < 1:
            raise ConfigError(f"eval.metric={self.metric} needs eval.rouge_dialogues >= 1")
        if self.rouge_dialogues < 0:
            raise ConfigError(f"eval.rouge_dialogues must be >= 0, got {self.rouge_dialogues}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ConfigError("eval.early_stopping_patience must be a positive integer or null")
            if self.strategy == "no" or not self.load_best:
                raise ConfigError("eval.early_stopping_patience needs evaluation and eval.load_best: true")

    @property
    def enabled(self) -> bool:
        return self.strategy != "no"

    @property
    def greater_is_better(self) -> bool:
        return self.metric != "loss"


@dataclass
class TrainConfig:
    """A whole training run (``dialogtune train CONFIG.yaml``)."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model spec (see DESIGN.md)"})
    method: str = field(
        default="lora",
        metadata={
            "help": "the fine-tuning method: a name in dialogtune.methods (dialogtune params --help lists them)"
        },
    )
    output_dir: str = "runs/train"
    seed: int = 42
    device: str = "auto"
    data: TrainData = field(default_factory=TrainData)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    sections: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "methods' settings by method name: the YAML sections lora:, ia3:, ..."},
    )

    def __post_init__(self) -> None:
        method = get_method(self.method)  # one line naming the known methods
        check_seed("seed", self.seed)
        for name, settings in self.sections.items():
            expected = settings_section(name)
            if expected is None or not isinstance(settings, expected):
                raise ConfigError(f"{name}: not the settings of a method ({', '.join(method_names())})")
        if method.settings_cls is not None:
            self.sections.setdefault(method.name, default_settings(method))
        if not self.model.strip():
            raise ConfigError("model must be a non-empty model spec")
        if not str(self.output_dir).strip():
            raise ConfigError(
                "output_dir must be a non-empty path (an empty one would mean the working directory)"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"device must be auto, cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES), got '{self.device}'"
            )
        if self.eval.enabled and self.data.eval is None:
            raise ConfigError("eval.strategy needs data.eval (a validation split); set eval.strategy: no")
        every = self.training.save_steps
        if (
            self.eval.enabled
            and self.eval.load_best
            and self.eval.strategy == "steps"
            and every is not None
            and every % int(self.eval.steps or 1)
        ):
            raise ConfigError(
                "training.save_steps must be a multiple of eval.steps when eval.load_best is true"
            )

    def __getattr__(self, name: str) -> Any:
        # config.lora, config.ia3, ...: a method's settings section (its defaults when not given).
        section = settings_section(name) if not name.startswith("_") else None
        if section is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.__dict__.get("sections", {}).get(name) or section()

    @property
    def method_settings(self) -> Any:
        """The active method's settings (``None`` for a method without settings, e.g. full)."""
        return self.sections.get(self.method)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config: every section, and the active method's settings under its name."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        result: dict[str, Any] = {}
        for key, value in values.items():
            result[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            if key == "training" and self.method_settings is not None:
                result[self.method] = dataclasses.asdict(self.method_settings)
        return result


# ---- YAML + --set → dataclasses (the config layer, dialogtune.config) -----------------------------


def build_config(raw: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping (a YAML file's contents after ``--set``)."""
    return build(TrainConfig, raw, sections=settings_section)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply ``--set`` overrides."""
    raw = read_yaml_file(path) if path is not None else {}
    return resolve_paths(build_config(apply_overrides(raw, overrides or [])))


def resolve_paths(config: TrainConfig) -> TrainConfig:
    """Make local paths absolute (relative to the cwd) so the saved config says exactly what was read."""
    if Path(config.data.source).expanduser().exists():
        config.data.source = str(Path(config.data.source).expanduser().resolve())
    if not config.model.startswith("random:") and Path(config.model).expanduser().exists():
        config.model = str(Path(config.model).expanduser().resolve())
    config.output_dir = str(Path(config.output_dir).expanduser().resolve())
    return config
