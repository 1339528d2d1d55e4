"""Percentile bootstrap intervals and the paired bootstrap test."""

from __future__ import annotations

import numpy as np
import pytest

from dialogtune.errors import ConfigError
from dialogtune.evaluation import bootstrap_ci, paired_bootstrap


def _scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).beta(2.0, 3.0, size=n)  # ROUGE-like values in [0, 1]


def test_interval_contains_the_mean_and_narrows_with_more_data() -> None:
    small, large = _scores(50), _scores(5000)
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert low_s <= small.mean() <= high_s
    assert low_l <= large.mean() <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 5  # width ~ 1/sqrt(n): 10x fewer -> ~1/10


def test_interval_width_matches_the_normal_approximation() -> None:
    values = _scores(2000, seed=3)
    low, high = bootstrap_ci(values, n_resamples=2000)
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert high - low == pytest.approx(expected, rel=0.15)


def test_seeded_reproducibility() -> None:
    values = _scores(300)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(list(values), seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_constant_values_and_single_value_give_a_point_interval() -> None:
    assert bootstrap_ci([0.25] * 10) == (0.25, 0.25)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_lower_confidence_gives_a_narrower_interval() -> None:
    values = _scores(400)
    low90, high90 = bootstrap_ci(values, confidence=0.90)
    low95, high95 = bootstrap_ci(values, confidence=0.95)
    assert low95 <= low90 and high90 <= high95


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ci([0.1, 0.2], n_resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([0.1, 0.2], [0.1])


def test_identical_systems_are_not_significantly_different() -> None:
    a = _scores(200)
    result = paired_bootstrap(a, a.copy())
    assert result["diff"] == 0.0
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)
    assert result["p_value"] == 1.0
    assert result["significant"] is False


def test_clearly_better_system_is_significant() -> None:
    a = _scores(200)
    b = np.clip(a + 0.05 + np.random.default_rng(1).normal(0.0, 0.02, size=a.size), 0.0, 1.0)
    result = paired_bootstrap(a, b, seed=0)
    assert result["diff"] == pytest.approx(float((b - a).mean()))
    assert result["ci_low"] > 0.0 and result["significant"] is True
    assert result["p_value"] < 0.01
    assert result["mean_b"] > result["mean_a"] and result["n"] == 200
    # Swapping the systems mirrors the result: same resamples, negated differences.
    swapped = paired_bootstrap(b, a, seed=0)
    assert swapped["diff"] == pytest.approx(-result["diff"])
    assert swapped["ci_high"] == pytest.approx(-result["ci_low"])
    assert swapped["p_value"] == result["p_value"] and swapped["significant"] is True


def test_noise_only_difference_is_not_significant() -> None:
    a = _scores(300)
    noise = np.random.default_rng(5).normal(0.0, 0.05, size=a.size)
    result = paired_bootstrap(a, a + (noise - noise.mean()) + 0.001)  # true mean difference 0.001
    assert result["ci_low"] < 0.0 < result["ci_high"]
    assert result["significant"] is False and result["p_value"] > 0.05
