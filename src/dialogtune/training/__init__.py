"""Fine-tuning: typed configs, tokenized datasets, collator, selective loss, Trainer recipes, resume.

``train(load_config("configs/x.yaml", ["training.max_steps=10"]))`` is the whole API most
callers need; ``dialogtune train`` is a thin verb over it. Importing this package loads
transformers' Trainer lazily (only :func:`train` needs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dialogtune.training.config import (
    EvalSettings,
    SplitSelection,
    TrainConfig,
    TrainData,
    TrainingSettings,
    apply_overrides,
    build,
    build_config,
    load_config,
)

if TYPE_CHECKING:
    from dialogtune.training.recipe import TrainResult

__all__ = [
    "EvalSettings",
    "SplitSelection",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "TrainingSettings",
    "apply_overrides",
    "build",
    "build_config",
    "load_config",
    "train",
]


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """See :func:`dialogtune.training.recipe.train`."""
    from dialogtune.training.recipe import train as _train

    return _train(config, **kwargs)
