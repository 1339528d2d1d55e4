"""``dialogtune score`` end to end, prediction files, and agreement with the notebook's numbers."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from dialogtune.cli import main
from dialogtune.data.records import Record
from dialogtune.evaluation import load_scoring_table, prediction_row, read_predictions, write_predictions

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
NOTEBOOK_COLUMNS = [
    "human_baseline_summaries",
    "original_model_summaries",
    "instruct_model_summaries",
    "peft_model_summaries",
]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["score", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def notebook_csv(tmp_path: Path) -> Path:
    rows = [
        ["the cat sat on the mat", "a cat", "the cat sat", "the cat sat on the mat"],
        ["the dog ran home", "dog", "a dog ran", "the dog ran home quickly"],
        ["#Person1# buys a car", "car", "#Person1# buys", "#Person1# buys a new car"],
    ]
    return _write_csv(tmp_path / "results.csv", NOTEBOOK_COLUMNS, rows)


def test_json_output_is_the_metrics_object(capsys: pytest.CaptureFixture[str], notebook_csv: Path) -> None:
    code, out, err = _score(
        capsys,
        str(notebook_csv),
        "--prediction-column",
        "peft_model_summaries",
        "--json",
        "--n-resamples",
        "50",
    )
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert set(metrics) == {*TYPES, "max_over_references", "n", "n_references", "bootstrap", "settings"}
    assert set(metrics["rouge1"]) == {"mean", "ci_low", "ci_high"}
    assert set(metrics["max_over_references"]) == set(TYPES)
    assert (metrics["n"], metrics["n_references"]) == (3, 3)
    assert metrics["bootstrap"] == {"n_resamples": 50, "confidence": 0.95, "seed": 0}
    assert metrics["settings"]["lsum_split"] == "sentences" and metrics["settings"]["use_stemmer"] is True


def test_table_output_and_output_file(
    capsys: pytest.CaptureFixture[str], notebook_csv: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "metrics.json"
    code, out, _ = _score(
        capsys,
        str(notebook_csv),
        "--prediction-column",
        "original_model_summaries",
        "--no-stemmer",
        "--lsum-split",
        "none",
        "--output",
        str(target),
    )
    assert code == 0
    assert "3 examples, 3 references" in out and "'original_model_summaries'" in out
    assert re.search(r"^rouge1\s+0\.\d{4}\s+\[0\.\d{4}, 0\.\d{4}\]\s+0\.\d{4}$", out, re.M)
    saved = json.loads(target.read_text())
    assert saved["settings"]["use_stemmer"] is False and saved["settings"]["lsum_split"] == "none"
    code, out, _ = _score(
        capsys,
        str(notebook_csv),
        "--prediction-column",
        "original_model_summaries",
        "--no-stemmer",
        "--lsum-split",
        "none",
        "--json",
    )
    assert json.loads(out) == saved


def test_several_reference_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "multi.csv",
        ["ref_a", "ref_b", "prediction"],
        [["the cat sat", "a dog ran", "the cat sat"], ["testing one two", "", "testing"]],
    )
    code, out, _ = _score(
        capsys, str(path), "--reference-column", "ref_a", "--reference-column", "ref_b", "--json"
    )
    metrics = json.loads(out)
    assert code == 0 and (metrics["n"], metrics["n_references"]) == (2, 3)  # the empty cell is skipped
    assert metrics["rouge1"]["mean"] == pytest.approx((0.5 + 0.5) / 2)
    assert metrics["max_over_references"]["rouge1"]["mean"] == pytest.approx((1.0 + 0.5) / 2)


def test_predictions_jsonl_round_trip_and_scoring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    record = Record(id="d1", dialogue="#Person1#: Hi.", references=("the cat sat", "a dog ran"))
    per_example = {"scores": {"rouge1": 0.5}, "scores_max": {"rouge1": 1.0}}
    rows = [
        prediction_row(record, "the cat sat", per_example),
        prediction_row(Record("d2", "#Person2#: Yo.", ("testing one two",)), "testing"),
    ]
    path = tmp_path / "predictions" / "test.jsonl"
    write_predictions(path, rows)
    read = read_predictions(path)
    assert list(read[0]) == ["id", "dialogue", "references", "prediction", "scores", "scores_max"]
    assert read[0]["references"] == ["the cat sat", "a dog ran"] and read[1]["prediction"] == "testing"
    assert load_scoring_table(path) == (
        ["the cat sat", "testing"],
        [["the cat sat", "a dog ran"], ["testing one two"]],
        ["d1", "d2"],
    )
    code, out, _ = _score(capsys, str(path), "--json", "--n-resamples", "20")
    assert code == 0 and json.loads(out)["rouge1"]["mean"] == pytest.approx(0.5)


def test_flattened_layout_groups_rows_by_dialogue_and_prediction(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    rows = [
        {"id": f"test_0_{i}", "dialogue": "D0", "summary": s, "prediction": "P0"} for i, s in enumerate("abc")
    ]
    rows.append({"id": "test_1_0", "dialogue": "D1", "summary": "x", "prediction": "P1"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_scoring_table(path) == (["P0", "P1"], [["a", "b", "c"], ["x"]], ["test_0_0", "test_1_0"])
    # Without a dialogue column every row is its own example; ids fall back to example numbers.
    path.write_text(
        "".join(json.dumps({"summary": row["summary"], "prediction": "P"}) + "\n" for row in rows)
    )
    predictions, references, ids = load_scoring_table(path)
    assert len(predictions) == 4 and ids == ["0", "1", "2", "3"]


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _score(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("dialogtune: error: ")
    return err


def test_errors_are_one_line_with_file_line_and_columns(
    capsys: pytest.CaptureFixture[str], notebook_csv: Path, tmp_path: Path
) -> None:
    err = _error(capsys, str(notebook_csv), "--prediction-column", "nope")
    assert (
        "no column 'nope'" in err and "'peft_model_summaries'" in err and "'human_baseline_summaries'" in err
    )
    err = _error(capsys, str(notebook_csv))
    assert (
        "several prediction columns (original_model_summaries, instruct_model_summaries, peft_model_summaries)"
        in err
    )
    assert "--prediction-column" in err
    assert "no such file" in _error(capsys, str(tmp_path / "missing.csv"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prediction": "a", "summary": "b"}\n{"prediction": oops}\n')
    err = _error(capsys, str(bad_json))
    assert f"{bad_json}:2:" in err and "malformed JSON" in err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("prediction,summary\nok,fine\ncaf\xe9,x\n".encode("latin-1"))
    assert f"{latin}:3:4: not valid UTF-8" in _error(capsys, str(latin))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty file" in _error(capsys, str(empty))
    ragged = _write_csv(tmp_path / "ragged.csv", ["prediction", "summary"], [["a", "b"], ["only one"]])
    assert f"{ragged}:3: 1 fields but the header has 2" in _error(capsys, str(ragged))
    no_ref = _write_csv(tmp_path / "noref.csv", ["prediction", "text"], [["a", "b"]])
    assert "no reference column" in _error(capsys, str(no_ref))
    assert "n-resamples" in _error(
        capsys, str(notebook_csv), "--prediction-column", "peft_model_summaries", "--n-resamples", "0"
    )


# ----------------------------------------------------------------------------- notebook agreement

DATA_DIR = Path(
    os.environ.get(
        "DIALOGTUNE_DIALOGSUM_DIR", Path(__file__).resolve().parents[1] / "../shared/data/dialogsum"
    )
)


def _build_rows() -> list[tuple[str, str, str]]:
    """500 dialogues x 3 references as (dialogue, reference, prediction), deterministic."""
    train = DATA_DIR / "train.jsonl"
    if not train.is_file():
        pytest.skip(f"DialogSum not found at {DATA_DIR} (set DIALOGTUNE_DIALOGSUM_DIR)")
    with open(train, encoding="utf-8") as handle:
        records = [json.loads(line) for line in itertools.islice(handle, 501)]
    rows = []
    for record, neighbour in zip(records, records[1:], strict=False):
        # Prediction: the first turn without its speaker tag, like a weak lead-1 baseline.
        prediction = re.sub(r"^#Person\d+#:\s*", "", record["dialogue"].splitlines()[0])
        words = record["summary"].split()
        perturbed = " ".join(word for i, word in enumerate(words) if i % 3 != 1)  # drop every third word
        for reference in (record["summary"], neighbour["summary"], perturbed):
            rows.append((record["dialogue"], reference, prediction))
    return rows


@pytest.fixture(scope="module")
def notebook_rows() -> list[tuple[str, str, str]]:
    return _build_rows()


@pytest.fixture(scope="module")
def evaluate_numbers(notebook_rows: list[tuple[str, str, str]]) -> dict[str, float]:
    """What the notebook's ``evaluate.load("rouge").compute(use_aggregator=True, use_stemmer=True)`` gives.

    ``evaluate`` scores each flattened (prediction, reference) row with ``RougeScorer`` and reports the
    ``mid`` (median of 1,000 bootstrap means) of ``BootstrapAggregator``; ``<type>_flat_mean`` is the
    plain mean of the same rows, which our mean-over-references must reproduce exactly.
    """
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    aggregator = scoring.BootstrapAggregator()
    state = np.random.get_state()  # BootstrapAggregator draws from the global numpy RNG
    np.random.seed(0)
    flat: dict[str, list[float]] = {rouge_type: [] for rouge_type in TYPES}
    for _, reference, prediction in notebook_rows:
        scores = scorer.score(reference, prediction)  # rouge_score order: (target, prediction)
        aggregator.add_scores(scores)
        for rouge_type in TYPES:
            flat[rouge_type].append(scores[rouge_type].fmeasure)
    result = {rouge_type: score.mid.fmeasure for rouge_type, score in aggregator.aggregate().items()}
    result.update({f"{rouge_type}_flat_mean": float(np.mean(flat[rouge_type])) for rouge_type in TYPES})
    np.random.set_state(state)
    return result


def test_agrees_with_the_notebooks_evaluate_rouge(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    notebook_rows: list[tuple[str, str, str]],
    evaluate_numbers: dict[str, float],
) -> None:
    # The notebook's results CSV: one row per reference, no dialogue column -> 1,500 examples.
    path = _write_csv(
        tmp_path / "results.csv",
        NOTEBOOK_COLUMNS,
        [[ref, pred, pred.upper(), pred] for _, ref, pred in notebook_rows],
    )
    code, out, _ = _score(
        capsys, str(path), "--prediction-column", "peft_model_summaries", "--lsum-split", "none", "--json"
    )
    metrics = json.loads(out)
    assert code == 0 and (metrics["n"], metrics["n_references"]) == (1500, 1500)
    for rouge_type in TYPES:
        assert metrics[rouge_type]["mean"] == pytest.approx(evaluate_numbers[rouge_type], abs=0.002), (
            rouge_type
        )
        assert metrics[rouge_type]["mean"] == pytest.approx(
            evaluate_numbers[f"{rouge_type}_flat_mean"], abs=1e-9
        )


def test_hub_layout_groups_500_dialogues_and_agrees(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    notebook_rows: list[tuple[str, str, str]],
    evaluate_numbers: dict[str, float],
) -> None:
    # The hub's flattened test layout: a dialogue column, 3 rows per dialogue -> 500 examples x 3 refs.
    path = _write_csv(
        tmp_path / "hub.csv", ["dialogue", "summary", "prediction"], [list(r) for r in notebook_rows]
    )
    code, out, _ = _score(capsys, str(path), "--json")
    metrics = json.loads(out)
    assert code == 0 and (metrics["n"], metrics["n_references"]) == (500, 1500)
    for rouge_type in ("rouge1", "rouge2", "rougeL"):  # rougeLsum differs by design: sentences are split
        assert metrics[rouge_type]["mean"] == pytest.approx(evaluate_numbers[rouge_type], abs=0.002), (
            rouge_type
        )
        # 3 references each: mean over examples of the per-dialogue mean == mean over the 1,500 rows.
        assert metrics[rouge_type]["mean"] == pytest.approx(
            evaluate_numbers[f"{rouge_type}_flat_mean"], abs=1e-9
        )
