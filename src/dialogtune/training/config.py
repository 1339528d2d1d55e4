"""The training config: typed dataclasses, loaded from YAML, overridable with ``--set a.b=c``.

One :class:`TrainConfig` says everything that determines a run; its resolved form is saved
as ``config.yaml`` in the run directory. Every section validates itself in
``__post_init__``; :func:`build` turns a YAML mapping into the dataclasses, naming the
key at fault (``training.lerning_rate``) in a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dialogtune.data.config import DEFAULT_SOURCE, DataConfig
from dialogtune.errors import ConfigError
from dialogtune.generation import GenerationSettings
from dialogtune.io import check_parsed, check_yaml_brackets, read_json_file, read_yaml_file
from dialogtune.models.lora import LoraSettings
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import PromptTemplate
from dialogtune.seeds import check_seed

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
            "help": "LoRA's frozen Linear weights: auto (bf16 when training in bf16: same matmuls, less memory), "
            "fp32, bf16"
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
    method: str = field(default="lora", metadata={"help": "full or lora"})
    output_dir: str = "runs/train"
    seed: int = 42
    device: str = "auto"
    data: TrainData = field(default_factory=TrainData)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise ConfigError(f"method must be full or lora, got '{self.method}'")
        check_seed("seed", self.seed)
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- YAML + --set → dataclasses -------------------------------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. PyYAML's 1.1 rules read ``strategy: no``
    (transformers' spelling) as ``False``; here it stays the string "no"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def parse_set_value(key: str, text: str, parse: Any) -> Any:
    """The value of ``--set key=text`` parsed as YAML; text that is not YAML stays text."""
    check_yaml_brackets(f"--set {key.strip()}", text, ConfigError)
    try:
        value = parse(text) if text.strip() else ""
    except yaml.YAMLError:  # e.g. a path with a colon; or bytes that are not UTF-8 (checked below)
        value = text
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: value nested too deeply") from None
    check_parsed(f"--set {key.strip()}", value, ConfigError, what="value")
    return value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"config file not found: {path}")
        loaded = read_yaml_file(path, ConfigError, loader=_Yaml12Loader)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        raw = loaded or {}
    config = build(TrainConfig, apply_overrides(raw, overrides or []))
    return resolve_paths(config)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` strings to a nested mapping; values are parsed as YAML (``1e-3``, ``[q,v]``, ``null``)."""
    raw = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        value = parse_set_value(key, text, parse_yaml)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def resolve_paths(config: TrainConfig) -> TrainConfig:
    """Make local paths absolute (relative to the cwd) so the saved config says exactly what was read."""
    if Path(config.data.source).expanduser().exists():
        config.data.source = str(Path(config.data.source).expanduser().resolve())
    if not config.model.startswith("random:") and Path(config.model).expanduser().exists():
        config.model = str(Path(config.model).expanduser().resolve())
    config.output_dir = str(Path(config.output_dir).expanduser().resolve())
    return config


def build(cls: type, values: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and value types on the way."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Sections reused from other blocks name their keys by their own short name
        # ("generation.top_p"); say where they sit in this config ("eval.generation.top_p").
        message, short = str(exc), prefix.rstrip(".").rsplit(".", 1)[-1] + "."
        if prefix and short != prefix and message.startswith(short):
            message = prefix + message[len(short) :]
        raise ConfigError(message) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads "1e-3" (no dot) as a string: accept any text float() understands.
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _describe(hint: Any) -> str:
    names = [getattr(a, "__name__", str(a)) for a in typing.get_args(hint) if a is not type(None)]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")
