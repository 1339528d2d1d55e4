"""Experiments: a baseline and variants trained, evaluated on the same dialogues, and reported.

``run_experiment(load_experiment("experiments/quickstart.yaml"))`` is the whole API;
``dialogtune run`` is a thin verb over it. :mod:`dialogtune.experiments.evaluate` evaluates one
model into a run directory (``dialogtune evaluate``, and every evaluation stage here); it loads
torch, so it is imported only by who uses it.
"""

from dialogtune.experiments.config import (
    EvaluationSpec,
    ExperimentConfig,
    ModelEntry,
    ReportSettings,
    apply_set,
    load_experiment,
)
from dialogtune.experiments.runner import ExperimentResult, StageOutcome, run_experiment, stage_key

__all__ = [
    "EvaluationSpec",
    "ExperimentConfig",
    "ExperimentResult",
    "ModelEntry",
    "ReportSettings",
    "StageOutcome",
    "apply_set",
    "load_experiment",
    "run_experiment",
    "stage_key",
]
