"""The metrics object: corpus ROUGE with bootstrap intervals and the settings that made it.

Shape (JSON-able; what ``dialogtune score --json`` prints and ``metrics/<split>.json`` holds)::

    {
      "rouge1": {"mean": 0.41, "ci_low": 0.40, "ci_high": 0.43},      # one per ROUGE type
      ...,
      "max_over_references": {"rouge1": {"mean": ..., "ci_low": ..., "ci_high": ...}, ...},
      "n": 500,                 # examples (dialogues)
      "n_references": 1500,     # reference summaries over all examples
      "bootstrap": {"n_resamples": 1000, "confidence": 0.95, "seed": 0},
      "settings": {...}         # RougeSettings.to_dict()
    }

The headline ``mean`` is the mean over examples of each example's mean over its references. When
every dialogue has the same number of references (the hub test split: 3 each) this equals the mean
over the flattened (prediction, reference) rows that the notebook feeds to ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dialogtune.errors import DataError
from dialogtune.evaluation.bootstrap import bootstrap_ci, check_bootstrap_params
from dialogtune.evaluation.rouge import ExampleScores, RougeSettings, score_examples


def _summarise(
    per_example: list[dict[str, float]],
    rouge_types: Sequence[str],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    summary = {}
    for rouge_type in rouge_types:
        values = np.array([scores[rouge_type] for scores in per_example], dtype=np.float64)
        # Same seed and n for every type: all types share the same resamples.
        low, high = bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
        summary[rouge_type] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high}
    return summary


def metrics_from_scores(
    example_scores: Sequence[ExampleScores],
    settings: RougeSettings | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Build the metrics object from already computed per-example scores."""
    settings = settings or RougeSettings()
    if not example_scores:
        raise DataError("nothing to score: no examples")
    headline = [scores.headline(settings) for scores in example_scores]
    maxima = [scores.max for scores in example_scores]
    metrics: dict[str, Any] = _summarise(headline, settings.rouge_types, n_resamples, confidence, seed)
    metrics["max_over_references"] = _summarise(maxima, settings.rouge_types, n_resamples, confidence, seed)
    metrics["n"] = len(example_scores)
    metrics["n_references"] = sum(scores.n_references for scores in example_scores)
    metrics["bootstrap"] = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    metrics["settings"] = settings.to_dict()
    return metrics


def compute_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    settings: RougeSettings | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score predictions against their references; corpus metrics plus per-example scores.

    Args:
        predictions: one text per example (dialogue).
        references: for each example, its reference summaries (one or more).
        settings: ROUGE settings; defaults to :class:`RougeSettings`.
        n_resamples, seed, confidence: percentile bootstrap for the intervals.

    Returns:
        ``(metrics, per_example)``: the metrics object described in this module's docstring, and for
        each example ``{"scores": {type: F}, "scores_max": {type: F}}``, where ``scores`` combines the
        references as ``settings.multi_reference`` says (mean by default); ready to merge into a
        predictions row.
    """
    settings = settings or RougeSettings()
    if not predictions:
        raise DataError("nothing to score: no predictions")
    check_bootstrap_params(n_resamples, confidence)  # fail before the (slow) scoring, not after
    example_scores = score_examples(predictions, references, settings)
    metrics = metrics_from_scores(
        example_scores, settings, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    per_example = [
        {"scores": scores.headline(settings), "scores_max": scores.max} for scores in example_scores
    ]
    return metrics, per_example
