"""`dialogtune report`: run directories in, every section out, HTML that renders.

Run directories are written by hand here (no model): a weak zero-shot baseline, a LoRA run and a
full fine-tuning run with their training directories, scored with the real ROUGE code.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from dialogtune.cli import main
from dialogtune.data.records import Record
from dialogtune.evaluation.metrics import compute_metrics
from dialogtune.evaluation.predictions import prediction_row, write_predictions
from dialogtune.evaluation.rouge import RougeSettings
from dialogtune.report import ReportOptions, load_runs, write_report
from dialogtune.report.document import Document, ExampleBlock, Paragraph, Section, Table
from dialogtune.report.examples import select_examples
from dialogtune.report.render import render_html, render_markdown
from dialogtune.report.tables import compare, comparison_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N = 30
TOPICS = ["tea", "the gym", "a new job", "the weather", "a birthday party", "the train", "a library book"]
FRIENDS = ["Jimmy", "Mary", "Ann", "Bob", "Lucy", "Sam"]


def _records() -> list[Record]:
    records = []
    for i in range(N):
        topic, friend = TOPICS[i % len(TOPICS)], FRIENDS[i % len(FRIENDS)]
        dialogue = (
            f"#Person1#: Hi {friend}, did you hear about {topic}?\n#Person2#: Yes, I will tell you "
            f"about {topic} at {i} o'clock.\n#Person1#: Great."
        )
        refs = (
            f"#Person2# will tell {friend} about {topic} at {i} o'clock.",
            f"{friend} and #Person2# talk about {topic}.",
        )
        records.append(Record(id=f"dev_{i}", dialogue=dialogue, references=refs))
    return records


RECORDS = _records()


def write_eval_run(
    path: Path,
    predictions: list[str],
    *,
    model: str,
    adapter: str | None = None,
    random_weights: bool = False,
    seconds_per_dialogue: float = 0.5,
) -> Path:
    """An evaluation run directory in the layout `dialogtune evaluate` writes."""
    settings = RougeSettings()
    metrics, per_example = compute_metrics(
        predictions, [list(r.references) for r in RECORDS], settings, n_resamples=200, seed=0
    )
    generation = {"max_new_tokens": 64, "num_beams": 1, "do_sample": False}
    data = {"source": "tiny-dialogues", "split": "validation", "limit": None}
    metrics["model"] = {"model": model, "random_weights": random_weights, "adapter": adapter}
    metrics["generation"] = {**generation, "seconds_per_dialogue": seconds_per_dialogue}
    metrics["data"] = {**data, "fingerprint": "feedc0ffee123456"}
    config = {
        "model": model,
        "adapter": adapter,
        "random_weights": random_weights,
        "data": data,
        "generation": generation,
        "prompt": {"template": "Summarize: {dialogue}", "chat": "auto"},
        "rouge": settings.to_dict(),
    }
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metadata.json").write_text(
        json.dumps(
            {
                "created": "2026-01-01T00:00:00",
                "wall_time_s": 12.0,
                "peak_memory_mb": 900.0,
                "git_commit": "abc123",
                "versions": {
                    "dialogtune": "0.1.0",
                    "torch": "2.13.0",
                    "transformers": "5.24.0",
                    "peft": "0.21.2",
                    "rouge-score": "0.1.2",
                },
                "parameters": {"total": 1_000_000, "trainable": 0, "trainable_percent": 0.0},
                "data_fingerprint": "feedc0ffee123456",
                "generation_stats": {"seconds_per_dialogue": seconds_per_dialogue},
            }
        )
    )
    (path / "metrics").mkdir()
    (path / "metrics" / "validation.json").write_text(json.dumps(metrics))
    write_predictions(
        path / "predictions" / "validation.jsonl",
        [prediction_row(r, p, e) for r, p, e in zip(RECORDS, predictions, per_example)],
    )
    return path


def write_train_run(path: Path, method: str, trainable: int, weights_bytes: int) -> Path:
    """A training run directory in the layout `dialogtune train` writes (weights faked)."""
    weights = path / ("adapter" if method == "lora" else "model")
    weights.mkdir(parents=True)
    (weights / "weights.safetensors").write_bytes(b"\0" * weights_bytes)
    (path / "config.yaml").write_text(
        yaml.safe_dump({"model": "base/model", "method": method, "training": {"learning_rate": 1e-3}})
    )
    (path / "metadata.json").write_text(
        json.dumps(
            {
                "wall_time_s": 3725.0,
                "peak_memory_mb": 2048.0,
                "method": method,
                "parameters": {
                    "total": 1_000_000 + (trainable if method == "lora" else 0),
                    "trainable": trainable,
                },
                "train": {"tokens_per_s": 1234.5, "examples_per_s": 3.2},
            }
        )
    )
    return weights


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    rng = random.Random(0)
    zero_shot = [
        "The people talk about something." if i % 3 else f"#Person3# and Tom discuss {TOPICS[0]}."
        for i in range(N)
    ]
    zero_shot[1] = "<script>alert('x')</script> \x10 talk & more"  # must stay text in every format
    lora = [r.references[0] if rng.random() < 0.7 else r.references[1] for r in RECORDS]
    full = [r.references[0] for r in RECORDS]
    write_eval_run(root / "eval-zero-shot", zero_shot, model="base/model")
    adapter = write_train_run(root / "train-lora", "lora", trainable=8_000, weights_bytes=40_000)
    write_eval_run(root / "eval-lora", lora, model="base/model", adapter=str(adapter))
    model_dir = write_train_run(root / "train-full", "full", trainable=1_000_000, weights_bytes=4_000_000)
    write_eval_run(root / "eval-full", full, model=str(model_dir))
    write_eval_run(root / "eval-random", ["tea tea tea"] * N, model="random:tiny-llama", random_weights=True)
    return root


@pytest.fixture(scope="module")
def report_dir(runs_root: Path) -> Path:
    out = runs_root / "report"
    runs = load_runs(
        [runs_root / d for d in ("eval-zero-shot", "eval-lora", "eval-full", "eval-random")],
        names=["zero-shot", "lora", "full", "random"],
    )
    write_report(runs, out, ReportOptions(n_resamples=300))
    return out


def test_runs_are_linked_to_their_training_runs(runs_root: Path) -> None:
    zero, lora, full = load_runs(
        [runs_root / "eval-zero-shot", runs_root / "eval-lora", runs_root / "eval-full"]
    )
    assert (zero.method, lora.method, full.method) == ("zero-shot", "lora", "full")
    assert zero.training is None and zero.trainable_params == 0
    assert lora.trainable_params == 8_000 and lora.training.weights_size_bytes == 40_000
    assert full.model == "base/model" and not full.random_weights
    assert load_runs([runs_root / "eval-random"])[0].random_weights


def test_paired_bootstrap_in_report_tables(runs_root: Path) -> None:
    zero, lora, full = load_runs(
        [runs_root / "eval-zero-shot", runs_root / "eval-lora", runs_root / "eval-full"],
        names=["zero-shot", "lora", "full"],
    )
    same = compare(full, full, ["rouge1", "rougeL"], n_resamples=500)
    assert [c.significant for c in same] == [False, False]
    assert all(c.diff == 0 and c.p_value == 1.0 for c in same)
    better = compare(zero, full, ["rouge1", "rouge2", "rougeL"], n_resamples=500)
    assert all(c.significant and c.diff > 0.3 and c.ci_low > 0 and c.n == N for c in better)
    table = comparison_table(same + better, "t", 500)
    assert [row[8] for row in table.rows] == ["no", "no", "yes", "yes", "yes"]
    assert table.rows[2][0] == "full vs zero-shot" and table.rows[2][4].startswith("+")


def test_examples_disagreement_first_then_seeded_sample(runs_root: Path) -> None:
    runs = load_runs([runs_root / "eval-zero-shot", runs_root / "eval-full"])
    chosen = select_examples(runs, n_disagree=2, n_random=3, seed=7)
    assert len(chosen) == 5 and len({i for i, _ in chosen}) == 5
    spreads = [abs(runs[1].scores_by_id[i]["rougeL"] - runs[0].scores_by_id[i]["rougeL"]) for i, _ in chosen]
    assert spreads[0] >= spreads[1] >= max(spreads[2:])
    assert "disagree" in chosen[0][1] and "random" in chosen[-1][1]
    assert select_examples(runs, 2, 3, seed=7) == chosen  # seeded: the same sample every time


def test_report_has_every_section(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    for needle in [
        "## Quantitative results",
        "Mean over references",
        "Max over references",
        "95% CI",
        "ROUGE-Lsum",
        "## Improvement",
        "vs the baseline (zero-shot)",
        "LoRA vs full fine-tuning",
        "significant",
        "lora vs full",
        "## Cost",
        "Trainable params",
        "8.0k",
        "39.1 KiB",
        "1h 02m",
        "2048 MiB",
        "1,234",
        "0.50 s",
        "## Plots",
        "(rouge.png)",
        "(quality_vs_params.png)",
        "## Faithfulness and length",
        "references (human)",
        "\\#Person3\\#, Tom",
        "Summary length",
        "## Qualitative examples",
        "models disagree most",
        "random sample (seed 0)",
        "Reference 2",
        "## Settings, data and versions",
        "Metric settings",
        "Generation settings",
        "max_new_tokens: 64",
        "feedc0ffee123456",
        "5.24.0",
        "abc123",
        "Training config of lora",
        "RANDOM WEIGHTS",
        "random (random weights)",
    ]:
        assert needle in md, needle
    assert "<script>" not in md  # escaped as \<script\>
    for png in ("rouge.png", "quality_vs_params.png"):
        assert (report_dir / png).read_bytes().startswith(PNG_SIGNATURE)
    numbers = json.loads((report_dir / "report.json").read_text())
    assert numbers["baseline"] == "zero-shot" and len(numbers["runs"]) == 4
    assert any(c["a"] == "full" and c["b"] == "lora" for c in numbers["comparisons"])


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_with_tables_and_png_data_uris(report_dir: Path) -> None:
    parser = _Collector()
    parser.feed((report_dir / "report.html").read_text())
    assert parser.tags.count("table") >= 12  # 8 section tables + one per example
    assert parser.tags.count("section") == 8
    assert "script" not in parser.tags and "link" not in parser.tags  # nothing fetched, nothing run
    assert len(parser.images) == 2
    for image in parser.images:
        prefix, _, payload = str(image["src"]).partition(",")
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(payload, validate=True).startswith(PNG_SIGNATURE)
        assert image["alt"]
    assert "RANDOM WEIGHTS" in "".join(parser.text)


def test_text_from_runs_is_escaped_in_both_formats() -> None:
    hostile = "<script>alert('x')</script> | *bold* \x10 & more"
    doc = Document(
        "t",
        sections=[
            Section(
                "S",
                "s",
                [
                    Paragraph(hostile),
                    Table(["h"], [[hostile]]),
                    ExampleBlock("e1", "why", hostile, [hostile], []),
                ],
            )
        ],
    )
    parser = _Collector()
    parser.feed(render_html(doc))
    assert "script" not in parser.tags
    text = "".join(parser.text)
    assert text.count("<script>alert('x')</script>") == 4  # shown as text, never run
    assert "\x10" not in text
    md = render_markdown(doc)
    outside_fences = "".join(md.split("```")[::2])  # in a fenced block, <script> is literal text already
    assert "<script>" not in outside_fences and "\\<script\\>" in md and "\\|" in md and "\x10" not in md


_PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('div'); out.id = 'probe';
  out.textContent = JSON.stringify({images: [...document.images].map(i => [i.complete, i.naturalWidth]),
    tables: document.querySelectorAll('table').length,
    rows: document.querySelectorAll('tbody tr').length});
  document.body.appendChild(out);
});</script></body>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    # The probe script goes into a copy: the report itself runs no scripts.
    page = tmp_path / "probe.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", _PROBE))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                str(_chromium()),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    probe = _Collector()
    probe.feed(dom)
    found = [t for t in probe.text if t.startswith('{"images"')]
    assert found, "the page did not finish loading"
    state = json.loads(found[0])
    assert len(state["images"]) == 2
    assert all(complete and width > 300 for complete, width in state["images"])  # decoded, real plots
    assert state["tables"] >= 12 and state["rows"] >= 30


def test_report_cli(runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-report"
    code = main(
        [
            "report",
            str(runs_root / "eval-zero-shot"),
            str(runs_root / "eval-lora"),
            "--output",
            str(out),
            "--names",
            "base",
            "tuned",
            "--examples",
            "1",
            "--random-examples",
            "1",
            "--n-resamples",
            "100",
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        ".dialogtune-output.json",
        "report.md",
        "report.html",
        "report.json",
        "rouge.png",
        "quality_vs_params.png",
    }
    assert "tuned vs base" in (out / "report.md").read_text()
    assert main(["report", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["report", str(runs_root / "eval-lora"), "--output", str(out), "--baseline", "nope"]) == 2


def test_report_writes_only_into_its_own_folders(runs_root: Path, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    assert main(["report", str(runs_root / "eval-lora"), "--output", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "my own notes"


def test_runs_on_other_dialogues_with_the_same_ids_are_not_paired(runs_root: Path, tmp_path: Path) -> None:
    """Same ids, different dialogues (another data set): nothing may be compared example by example."""
    other = tmp_path / "eval-other"
    shutil.copytree(runs_root / "eval-lora", other)
    predictions = other / "predictions" / "validation.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    for row in rows:
        row["dialogue"] = "#Person1#: A different conversation.\n#Person2#: Indeed."
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = load_runs([runs_root / "eval-zero-shot", other], names=["zero-shot", "other"])
    assert compare(runs[0], runs[1], ["rouge1"], n_resamples=50, seed=0) == []
    assert select_examples(runs, n_disagree=3, n_random=3) == []
    same = load_runs([runs_root / "eval-zero-shot", runs_root / "eval-lora"], names=["zero-shot", "lora"])
    assert compare(same[0], same[1], ["rouge1"], n_resamples=50, seed=0)  # the control: these pair
