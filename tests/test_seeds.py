"""Seeds are checked where they are accepted: 0 <= seed < 2**32, the range numpy takes."""

from __future__ import annotations

import numpy as np
import pytest

from dialogtune.data.config import DataConfig
from dialogtune.errors import ConfigError
from dialogtune.evaluation.bootstrap import bootstrap_ci
from dialogtune.experiments.config import EvaluationSpec, ReportSettings
from dialogtune.generation import GenerationSettings
from dialogtune.report.build import ReportOptions
from dialogtune.seeds import SEED_LIMIT
from dialogtune.training.config import TrainConfig, TrainData

BUILDERS = {
    "data.seed": lambda seed: DataConfig(seed=seed),
    "generation.seed": lambda seed: GenerationSettings(seed=seed),
    "evaluation.seed": lambda seed: EvaluationSpec(seed=seed),
    "report.seed": lambda seed: ReportSettings(seed=seed),
    "report seed": lambda seed: ReportOptions(seed=seed),
    "training data.seed": lambda seed: TrainData(seed=seed),
    "seed": lambda seed: TrainConfig(seed=seed),
}


@pytest.mark.parametrize("key", list(BUILDERS))
@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, 2**64, True, 1.0, "3"])
def test_unusable_seed_is_a_config_error(key: str, seed: object) -> None:
    with pytest.raises(ConfigError, match="seed must be"):
        BUILDERS[key](seed)


@pytest.mark.parametrize("key", list(BUILDERS))
def test_the_whole_range_is_accepted(key: str) -> None:
    for seed in (0, SEED_LIMIT - 1):
        BUILDERS[key](seed)


def test_the_range_is_what_numpy_accepts() -> None:
    values = [0.1, 0.5, 0.9]
    bootstrap_ci(values, n_resamples=5, seed=SEED_LIMIT - 1)  # the largest seed works
    np.random.seed(SEED_LIMIT - 1)  # transformers' set_seed calls this
    for outside in (-1, SEED_LIMIT):
        with pytest.raises(ValueError):
            np.random.seed(outside)
