"""Hyper-parameter sweeps: an Optuna study over training-config keys.

``run_sweep(load_sweep("sweeps/smollm2-cpu.yaml"))`` is the whole API; ``dialogtune sweep`` is a
thin verb over it. A trial is an ordinary training run (:mod:`dialogtune.training`) whose
evaluations feed Optuna's pruner; the study lives in an RDB storage (SQLite by default), so a
killed sweep resumes and several machines can work on one study.
"""

from dialogtune.sweep.config import (
    Budget,
    Objective,
    PrunerSettings,
    SamplerSettings,
    SweepConfig,
    check_sweep,
    load_sweep,
)
from dialogtune.sweep.runner import SweepResult, run_sweep
from dialogtune.sweep.space import KINDS, Param, parse_space

__all__ = [
    "KINDS",
    "Budget",
    "Objective",
    "Param",
    "PrunerSettings",
    "SamplerSettings",
    "SweepConfig",
    "SweepResult",
    "check_sweep",
    "load_sweep",
    "parse_space",
    "run_sweep",
]
