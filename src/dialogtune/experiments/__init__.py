"""Experiments: a baseline and variants trained, evaluated on the same dialogues, and reported.

``run_experiment(load_experiment("experiments/quickstart.yaml"))`` is the whole API;
``dialogtune run`` is a thin verb over it.
"""

from dialogtune.experiments.config import (
    EvaluationConfig,
    ExperimentConfig,
    ModelEntry,
    ReportSettings,
    apply_set,
    load_experiment,
)
from dialogtune.experiments.runner import ExperimentResult, StageOutcome, run_experiment, stage_key

__all__ = [
    "EvaluationConfig",
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
