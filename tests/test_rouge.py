"""ROUGE per example and the metrics object: hand-computable cases first."""

from __future__ import annotations

import json

import pytest

from dialogtune.errors import ConfigError, DataError
from dialogtune.evaluation import (
    RougeSettings,
    compute_metrics,
    score_examples,
    split_sentences,
)
from dialogtune.evaluation.rouge import prepare_for_lsum

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def _one(prediction: str, references: list[str], **settings: object) -> dict[str, float]:
    (scores,) = score_examples([prediction], [references], RougeSettings(**settings))
    return scores.mean


def test_testing_one_two_is_hand_computable() -> None:
    # prediction "testing" vs reference "testing one two": P = 1/1, R = 1/3, F = 2PR/(P+R) = 0.5
    scores = _one("testing", ["testing one two"])
    assert scores["rouge1"] == pytest.approx(0.5)
    assert scores["rougeL"] == pytest.approx(0.5)
    assert scores["rouge2"] == 0.0  # a one-token prediction has no bigram


def test_rouge2_counts_shared_bigrams() -> None:
    # bigrams: pred {the cat, cat sat}, ref {the cat, cat ran}: 1 shared -> P = R = F = 1/2
    assert _one("the cat sat", ["the cat ran"])["rouge2"] == pytest.approx(0.5)


def test_stemming_matches_running_and_run() -> None:
    assert _one("running", ["run"])["rouge1"] == 1.0
    assert _one("running", ["run"], use_stemmer=False)["rouge1"] == 0.0


def test_tokenizer_lowercases_and_drops_punctuation() -> None:
    assert _one("THE CAT, sat!", ["the cat sat"])["rouge1"] == 1.0


def test_multi_reference_mean_and_max() -> None:
    (scores,) = score_examples(["the cat sat"], [["the cat sat", "a dog ran"]], RougeSettings())
    assert scores.mean["rouge1"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2
    assert scores.max["rouge1"] == 1.0
    assert scores.n_references == 2
    assert scores.headline(RougeSettings(multi_reference="max")) is scores.max


def test_empty_prediction_scores_zero_and_missing_reference_is_an_error() -> None:
    assert _one("", ["a reference"]) == dict.fromkeys(TYPES, 0.0)
    with pytest.raises(DataError, match="example 0: no reference"):
        score_examples(["text"], [[]])
    with pytest.raises(DataError, match="1 predictions but 2"):
        score_examples(["text"], [["a"], ["b"]])


def test_split_sentences_keeps_abbreviations_and_initials() -> None:
    text = "Mr. Smith sees Dr. Brown. They meet at 9 a.m. on Monday! Is it fine? Yes.\n#Person1# agrees"
    assert split_sentences(text) == [
        "Mr. Smith sees Dr. Brown.",
        "They meet at 9 a.m. on Monday!",
        "Is it fine?",
        "Yes.",
        "#Person1# agrees",
    ]
    assert split_sentences("#Person1# is hungry. #Person2# cooks.") == [
        "#Person1# is hungry.",
        "#Person2# cooks.",
    ]
    assert split_sentences("  ") == []


def test_lsum_split_changes_rougelsum_only() -> None:
    prediction, reference = "The cat sat. The dog ran.", "The dog ran. The cat sat."
    # rougeL: LCS("the cat sat the dog ran", "the dog ran the cat sat") = 3 of 6 tokens -> F = 0.5.
    # rougeLsum with sentences: each reference sentence is matched in full (union LCS) -> F = 1.
    split = _one(prediction, [reference], lsum_split="sentences")
    assert split["rougeL"] == pytest.approx(0.5)
    assert split["rougeLsum"] == pytest.approx(1.0)
    for mode in ("none", "newline"):  # one line = one "sentence" for rouge_score
        assert _one(prediction, [reference], lsum_split=mode)["rougeLsum"] == pytest.approx(0.5)
    assert prepare_for_lsum("a\nb", "none") == "a b"
    assert prepare_for_lsum("a\nb", "newline") == "a\nb"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rouge_types": ("rouge0",)},
        {"rouge_types": ()},
        {"rouge_types": ("rouge1", "rouge1")},
        {"lsum_split": "nltk"},
        {"multi_reference": "median"},
        {"use_stemmer": "yes"},
    ],
)
def test_settings_validate(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RougeSettings(**kwargs)


def test_settings_record_implementation_and_choices() -> None:
    recorded = RougeSettings(lsum_split="none").to_dict()
    assert recorded["implementation"] == "rouge_score"
    assert recorded["implementation_version"] == "0.1.2"
    assert recorded["use_stemmer"] is True and recorded["lsum_split"] == "none"
    assert recorded["multi_reference"] == "mean"
    assert "[a-z0-9]" in recorded["tokenizer"]
    assert RougeSettings(rouge_types=["rouge1"]).rouge_types == ("rouge1",)


def test_compute_metrics_object_and_per_example() -> None:
    predictions = ["the cat sat", "testing", ""]
    references = [["the cat sat", "a dog ran"], ["testing one two"], ["something"]]
    metrics, per_example = compute_metrics(predictions, references, n_resamples=200, seed=1)
    assert set(metrics) == {*TYPES, "max_over_references", "n", "n_references", "bootstrap", "settings"}
    assert metrics["n"] == 3 and metrics["n_references"] == 4
    assert metrics["bootstrap"] == {"n_resamples": 200, "confidence": 0.95, "seed": 1}
    assert metrics["rouge1"]["mean"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert metrics["max_over_references"]["rouge1"]["mean"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    for rouge_type in TYPES:
        row = metrics[rouge_type]
        assert 0.0 <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= 1.0
    assert per_example[0] == {
        "scores": {"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5, "rougeLsum": 0.5},
        "scores_max": {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0},
    }
    json.dumps(metrics)  # JSON-able as is


def test_mean_over_references_equals_flattened_rows_mean() -> None:
    predictions = ["the cat sat on the mat", "a dog barked loudly"]
    references = [["a cat sat", "the mat", "cat on mat"], ["the dog barked", "dogs bark", "loud noise"]]
    metrics, _ = compute_metrics(predictions, references, n_resamples=10)
    flat = score_examples(
        [p for p, refs in zip(predictions, references, strict=True) for _ in refs],
        [r for refs in references for r in refs],
    )
    assert metrics["rouge1"]["mean"] == pytest.approx(sum(s.mean["rouge1"] for s in flat) / len(flat))


def test_compute_metrics_rejects_nothing_and_bad_bootstrap() -> None:
    with pytest.raises(DataError, match="nothing to score"):
        compute_metrics([], [])
    with pytest.raises(ConfigError, match="n_resamples"):
        compute_metrics(["a"], [["a"]], n_resamples=0)
