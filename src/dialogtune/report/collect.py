"""Read run directories into typed summaries the report can rely on.

An *evaluation* run directory (``dialogtune evaluate``, or an experiment's ``eval/<name>/`` stage)
holds ``config.yaml``, ``metadata.json``, ``metrics/<split>.json`` and ``predictions/<split>.jsonl``.
A trained model's costs live in its *training* run directory (``dialogtune train``), which we find
from the evaluation config: the parent of its ``adapter`` folder, or of the ``model/`` folder it
loaded. Everything optional is optional: a zero-shot baseline has no training run, an older run may
lack a key; missing values become ``None`` and the report prints a dash. What is present must
be what it claims: a file that does not parse, or a value of the wrong type where the report
computes with it (a mean that is text, scores that are not numbers), is a one-line
:class:`DataError` naming the file and key, not a traceback halfway through writing the report.

An *experiment* directory (``dialogtune run``) holds ``experiment.json`` listing its evaluation
stages in order; passing it to the report expands to those runs with their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dialogtune.config import read_yaml
from dialogtune.errors import DataError
from dialogtune.io import json_kind, read_json_file
from dialogtune.report.checks import (
    CONFIG_TYPES,
    METADATA_TYPES,
    TRAIN_CONFIG_TYPES,
    TRAIN_METADATA_TYPES,
    check_metrics,
    check_prediction_rows,
    check_types,
    lookup,
)

EXPERIMENT_MANIFEST = "experiment.json"
_SPLIT_PREFERENCE = ("test", "validation")


def same_example(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two prediction rows are about the same example: same dialogue and same references."""
    if a is None or b is None:
        return False
    return a.get("dialogue") == b.get("dialogue") and list(a.get("references") or []) == list(
        b.get("references") or []
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or ``{}`` when the file is absent; anything unreadable is a DataError."""
    if not path.exists():
        return {}
    loaded = read_yaml(path, DataError)
    if loaded is not None and not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a mapping of keys, got {json_kind(loaded)}")
    return loaded or {}


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or ``{}`` when the file is absent; anything unreadable is a DataError."""
    return read_json_file(path) if path.exists() else {}


def dir_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class TrainingInfo:
    """What a training run directory says about the cost of making a model."""

    path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    weights_dir: Path | None

    @property
    def method(self) -> str | None:
        return self.config.get("method")

    @property
    def base_model(self) -> str | None:
        return self.config.get("model")

    @property
    def weights_size_bytes(self) -> int | None:
        return dir_size_bytes(self.weights_dir) if self.weights_dir and self.weights_dir.is_dir() else None

    @property
    def weights_file_bytes(self) -> int | None:
        """The trained weights alone (the folder's safetensors), without tokenizer and config files."""
        if not self.weights_dir or not self.weights_dir.is_dir():
            return None
        return sum(f.stat().st_size for f in self.weights_dir.glob("*.safetensors") if f.is_file())

    def get(self, *paths: str) -> Any:
        return lookup(self.metadata, *paths)


@dataclass
class RunSummary:
    """One evaluated model: its numbers, its predictions, and how it was made."""

    name: str
    path: Path
    split: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    training: TrainingInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        base = self.training.base_model if self.training else None
        return str(base or self.config.get("model") or lookup(self.metrics, "model.model") or "?")

    @property
    def method(self) -> str:
        """``zero-shot`` (nothing trained) or the fine-tuning method (``full``, ``lora``, ``ia3``, ...)."""
        if self.training is not None and self.training.method:
            return str(self.training.method)
        adapter = self.config.get("adapter")
        if not adapter:
            return "zero-shot"
        from dialogtune.methods import method_of_adapter  # an adapter evaluated without its training run

        found = _resolve(str(adapter), self.path)
        method = method_of_adapter(found) if found is not None else None
        return method.name if method is not None else "adapter"

    @property
    def random_weights(self) -> bool:
        # A model fine-tuned from random weights is loaded from a directory, so its own spec looks
        # pretrained; the training config still knows where it started.
        flags = [self.config.get("random_weights"), lookup(self.metrics, "model.random_weights")]
        if self.training is not None:
            flags.append(str(self.training.base_model or "").startswith("random:"))
        return any(bool(flag) for flag in flags) or self.model.startswith("random:")

    @property
    def display_name(self) -> str:
        return self.name + (" (random weights)" if self.random_weights else "")

    @property
    def total_params(self) -> int | None:
        value = self.training.get("parameters.total", "trainable_parameters.total") if self.training else None
        return value if value is not None else lookup(self.metadata, "parameters.total")

    @property
    def trainable_params(self) -> int:
        """Parameters the fine-tuning updated: 0 for a zero-shot model (nothing was trained)."""
        if self.training is None:
            return 0
        value = self.training.get(
            "parameters.trainable", "trainable_parameters.trainable", "trainable_params"
        )
        return int(value) if value is not None else 0

    @cached_property
    def scores_by_id(self) -> dict[str, dict[str, float]]:
        return {str(row["id"]): dict(row.get("scores") or {}) for row in self.predictions}

    @cached_property
    def rows_by_id(self) -> dict[str, dict[str, Any]]:
        return {str(row["id"]): row for row in self.predictions}

    @property
    def rouge_types(self) -> list[str]:
        types = lookup(self.metrics, "settings.rouge_types")
        return (
            list(types)
            if types
            else [k for k in ("rouge1", "rouge2", "rougeL", "rougeLsum") if k in self.metrics]
        )


def _pick_split(run_dir: Path, split: str | None) -> str:
    available = sorted(p.stem for p in (run_dir / "metrics").glob("*.json"))
    if not available:
        raise DataError(f"{run_dir}: no metrics/<split>.json: is this an evaluation run directory?")
    if split is not None:
        if split not in available:
            raise DataError(f"{run_dir}: no metrics for split '{split}' (found: {', '.join(available)})")
        return split
    for preferred in _SPLIT_PREFERENCE:
        if preferred in available:
            return preferred
    return available[0]


def _resolve(path_text: str, run_dir: Path) -> Path | None:
    path = Path(path_text).expanduser()
    for candidate in (path, run_dir / path):
        if candidate.exists():
            return candidate.resolve()
    return None


def find_training_run(run_dir: Path, config: dict[str, Any]) -> TrainingInfo | None:
    """The training run that produced the evaluated weights, if they came from one."""
    candidates = []
    if config.get("adapter"):
        candidates.append(_resolve(str(config["adapter"]), run_dir))
    model = str(config.get("model") or "")
    if model and not model.startswith("random:"):
        candidates.append(_resolve(model, run_dir))
    for weights in candidates:
        if weights is None or not weights.is_dir():
            continue
        train_dir = weights.parent
        try:
            train_config = _read_yaml(train_dir / "config.yaml")
        except DataError:  # the folder above some weights need not be ours at all
            continue
        if "method" in train_config:  # a training run, not any folder that happens to hold weights
            check_types(train_dir / "config.yaml", train_config, TRAIN_CONFIG_TYPES)
            metadata = _read_json(train_dir / "metadata.json")
            check_types(train_dir / "metadata.json", metadata, TRAIN_METADATA_TYPES)
            return TrainingInfo(path=train_dir, config=train_config, metadata=metadata, weights_dir=weights)
    return None


def load_run(run_dir: str | Path, name: str | None = None, split: str | None = None) -> RunSummary:
    """Read one evaluation run directory (see the module docstring)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"run directory not found: {path}")
    chosen = _pick_split(path, split)
    predictions_file = path / "predictions" / f"{chosen}.jsonl"
    if not predictions_file.is_file():
        raise DataError(f"{path}: metrics for '{chosen}' but no predictions/{chosen}.jsonl")
    from dialogtune.evaluation.predictions import read_predictions

    config = _read_yaml(path / "config.yaml")
    check_types(path / "config.yaml", config, CONFIG_TYPES)
    metadata = _read_json(path / "metadata.json")
    check_types(path / "metadata.json", metadata, METADATA_TYPES)
    metrics_file = path / "metrics" / f"{chosen}.json"
    metrics = _read_json(metrics_file)
    check_metrics(metrics_file, metrics)
    predictions = read_predictions(predictions_file)
    check_prediction_rows(predictions_file, predictions)
    return RunSummary(
        name=name or path.resolve().name,
        path=path,
        split=chosen,
        config=config,
        metadata=metadata,
        metrics=metrics,
        predictions=predictions,
        training=find_training_run(path, config),
    )


def expand_run_dirs(paths: Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """Replace each experiment directory by its evaluation stages, named as in the experiment."""
    expanded: list[tuple[Path, str | None]] = []
    for entry in paths:
        path = Path(entry)
        manifest = _read_json(path / EXPERIMENT_MANIFEST)
        runs = manifest.get("runs")
        if not runs:
            expanded.append((path, None))
            continue
        if not isinstance(runs, list) or not all(
            isinstance(run, dict)
            and isinstance(run.get("path"), str)
            and isinstance(run.get("name"), (str, type(None)))
            for run in runs
        ):
            raise DataError(f"{path / EXPERIMENT_MANIFEST}: 'runs' must be a list of {{name, path}} objects")
        expanded.extend((path / run["path"], run.get("name")) for run in runs)
    return expanded


def load_runs(
    paths: Sequence[str | Path], names: Sequence[str] | None = None, split: str | None = None
) -> list[RunSummary]:
    """Read several run (or experiment) directories; names must end up unique."""
    expanded = expand_run_dirs(paths)
    if names is not None and len(names) != len(expanded):
        raise DataError(f"{len(names)} names for {len(expanded)} runs")
    runs = [
        load_run(path, name=(names[i] if names else label), split=split)
        for i, (path, label) in enumerate(expanded)
    ]
    seen: dict[str, int] = {}
    for run in runs:  # two dirs called "eval" must not collapse into one column
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name}-{seen[run.name]}"
    return runs
