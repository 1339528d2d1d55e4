"""The quickstart end to end on the real embedded model (opt-in: ``pytest -m slow``, ~6 min).

``dialogtune run experiments/quickstart.yaml``: zero-shot vs a 25-step LoRA on 50 validation
dialogues, then the report. Checks what the README promises: the fine-tuned model is better,
significantly, and the report says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialogtune.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_end_to_end(tmp_path: Path, dialogsum_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)  # the experiment names the data relative to the repo root
    out = tmp_path / "quickstart"
    args = [
        "run",
        "experiments/quickstart.yaml",
        "--set",
        f"output_dir={out}",
        "--set",
        f"evaluation.data.source={dialogsum_dir}",
        "--set",
        f"variants.lora-r16.set.data.source={dialogsum_dir}",
    ]
    assert main(args) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    zero = json.loads((out / "eval" / "zero-shot" / "metrics" / "validation.json").read_text())
    lora = json.loads((out / "eval" / "lora-r16" / "metrics" / "validation.json").read_text())
    assert zero["n"] == lora["n"] == 50
    assert lora["rouge1"]["mean"] > zero["rouge1"]["mean"] + 0.05
    assert lora["rouge1"]["ci_low"] > zero["rouge1"]["mean"]
    assert "report" in (out / "report" / "report.md").read_text().lower()
    assert report  # the machine-readable numbers exist
    capsys.readouterr()
    # A rerun reuses every finished stage.
    assert main(args) == 0
    assert capsys.readouterr().out.count("reused") == 3
