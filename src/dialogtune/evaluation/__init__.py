"""Evaluation: ROUGE via rouge_score, multi-reference combination, bootstrap CIs, paired tests.

``rouge_score`` (and with it nltk) is imported only when something is scored, so importing this
package stays cheap.
"""

from dialogtune.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from dialogtune.evaluation.metrics import compute_metrics, metrics_from_scores
from dialogtune.evaluation.predictions import (
    ScoringTable,
    load_scoring_table,
    prediction_row,
    read_predictions,
    read_scoring_table,
    write_predictions,
)
from dialogtune.evaluation.rouge import (
    DEFAULT_ROUGE_TYPES,
    LSUM_SPLITS,
    ExampleScores,
    RougeSettings,
    score_examples,
    split_sentences,
)

__all__ = [
    "DEFAULT_ROUGE_TYPES",
    "LSUM_SPLITS",
    "ExampleScores",
    "RougeSettings",
    "ScoringTable",
    "bootstrap_ci",
    "compute_metrics",
    "load_scoring_table",
    "metrics_from_scores",
    "paired_bootstrap",
    "prediction_row",
    "read_predictions",
    "read_scoring_table",
    "score_examples",
    "split_sentences",
    "write_predictions",
]
