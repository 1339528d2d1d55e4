"""Bootstrap confidence intervals and the paired bootstrap test, vectorised with numpy.

Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the per-example scores with
replacement, take the mean of each resample, and read the interval off the percentiles of those
means. ``rouge_score.scoring.BootstrapAggregator`` does the same with a Python loop over the global
``np.random`` state; we use a seeded ``default_rng`` so a number can be reproduced exactly.

The paired test (Koehn 2004, "Statistical significance tests for machine translation evaluation")
resamples the *same* examples for both systems, so the per-example difference carries the signal
and the shared difficulty of each dialogue cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dialogtune.errors import ConfigError

# Indices drawn per chunk: 4M int64 = 32 MB, e.g. 1,000 resamples of 4,000 examples at once.
_MAX_DRAWS_PER_CHUNK = 4_000_000


# More than any interval needs (the default is 1,000); beyond this, numpy's arrays overflow.
MAX_RESAMPLES = 10_000_000


def check_bootstrap_params(n_resamples: int, confidence: float) -> None:
    """Raise ConfigError for a resample count or confidence level the bootstrap cannot use."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples: expected a positive integer, got {n_resamples!r}")
    if n_resamples > MAX_RESAMPLES:
        raise ConfigError(f"n_resamples: expected at most {MAX_RESAMPLES:,}, got {n_resamples:,}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: expected a number between 0 and 1, got {confidence!r}")


def _as_vector(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def resample_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of the 1-D ``values``."""
    n = values.shape[0]
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)  # bound memory; the draw order stays the seed's
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0  # 0.95 -> the 2.5th and 97.5th percentiles
    low, high = np.percentile(means, [100.0 * tail, 100.0 * (1.0 - tail)])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` for the mean of ``values``.

    The same ``seed`` and number of values give the same resample indices, so intervals computed
    for several metrics over the same examples come from the same resamples.
    """
    check_bootstrap_params(n_resamples, confidence)
    array = _as_vector(values)
    means = resample_means(array, n_resamples, np.random.default_rng(seed))
    return _percentile_interval(means, confidence)


def paired_bootstrap(
    a_values: Sequence[float] | np.ndarray,
    b_values: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Is system B better than system A on the same examples? Two-sided paired bootstrap.

    Args:
        a_values: per-example scores of system A.
        b_values: per-example scores of system B, in the same example order.

    Returns:
        ``diff`` (mean of ``b - a``), ``ci_low``/``ci_high`` (percentile interval of the resampled mean
        difference), ``p_value`` (share of resampled differences on the other side of zero from
        ``diff``, doubled, capped at 1; 0 means below ``1 / n_resamples``), ``significant`` (the
        interval excludes 0), plus ``mean_a``, ``mean_b``, ``n``, ``n_resamples``, ``confidence``.
    """
    check_bootstrap_params(n_resamples, confidence)
    a = _as_vector(a_values, "a_values")
    b = _as_vector(b_values, "b_values")
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same examples: {a.size} scores for A, {b.size} for B")
    differences = b - a
    diff = float(differences.mean())
    means = resample_means(differences, n_resamples, np.random.default_rng(seed))
    ci_low, ci_high = _percentile_interval(means, confidence)
    if diff > 0:
        other_side = float(np.mean(means <= 0.0))
    elif diff < 0:
        other_side = float(np.mean(means >= 0.0))
    else:
        other_side = 1.0  # no observed difference: nothing to reject
    return {
        "diff": diff,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": min(1.0, 2.0 * other_side),
        "significant": bool(ci_low > 0.0 or ci_high < 0.0),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "n": int(a.size),
        "n_resamples": n_resamples,
        "confidence": confidence,
    }
