"""Integration: the real embedded SmolLM2-135M-Instruct summarizes real DialogSum dialogues."""

from __future__ import annotations

import json

import pytest

from dialogtune.cli import main

pytestmark = pytest.mark.integration


def test_embedded_model_summarizes_two_validation_dialogues(dialogsum_dir, tmp_path, capsys):
    run = tmp_path / "zero-shot"
    code = main(
        [
            "evaluate",
            "--model",
            "smollm2-135m-instruct",
            "--data",
            str(dialogsum_dir),
            "--split",
            "validation",
            "--limit",
            "2",
            "--max-new-tokens",
            "60",
            "--batch-size",
            "2",
            "--output-dir",
            str(run),
            "--n-resamples",
            "100",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics" / "validation.json").read_text())
    assert metrics["n"] == 2 and "warning" not in metrics  # real weights, not random
    assert metrics["model"]["model_type"] == "llama"
    rows = [json.loads(line) for line in (run / "predictions" / "validation.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["dev_0", "dev_1"]
    for row in rows:
        words = row["prediction"].split()
        assert len(words) >= 5, row["prediction"]
        # Real English, not random bytes: nearly all words are alphabetic.
        assert sum(w.strip(".,!?'\"").isalpha() for w in words) >= 0.8 * len(words), row["prediction"]
    # Zero-shot SmolLM2 rambles, but it shares content words with the references.
    assert metrics["rouge1"]["mean"] > 0.08
