"""``dialogtune batch`` on the local engine: shards, bad rows, resuming after kill -9, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dialogtune
from dialogtune.batch import BatchConfig, ModelJob, run_batch
from dialogtune.batch.inputs import find_inputs, plan_shards, read_shard
from dialogtune.cli import main
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.inference import load_for_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LLAMA = "random:tiny-llama"
FAST = ["--max-new-tokens", "8", "--threads-per-worker", "1"]
SRC = str(Path(dialogtune.__file__).resolve().parents[1])


def dialogues(n: int) -> list[str]:
    topics = ["the train", "lunch", "a refund", "the weather", "a new job", "the meeting"]
    return [
        f"#Person1#: What about {topics[i % 6]}?\n#Person2#: " + "Well, " * (i % 5) + f"answer number {i}."
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def shard_table(out: Path) -> pa.Table:
    return pq.read_table(out / "shards").select(["id", "summary"])


def batch_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["batch", "--model", LLAMA, "--input", str(src), "--output", str(out), *FAST, *extra]


def test_local_t5_parquet_equals_generate_per_shard(tmp_path, capsys):
    texts = dialogues(10)
    src = tmp_path / "in.parquet"
    # Row groups of 3 and shards of 4: shards start and end inside row groups.
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(10)], "dialogue": texts}), src, row_group_size=3)
    out = tmp_path / "out"
    assert main([*batch_args(src, out, "--shard-size", "4"), "--model", "random:tiny-t5"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] == f"3 shards in {out}/shards: 10 summaries"
    assert stdout[-1].startswith("10 rows, ") and stdout[-1].endswith(" rows/s")

    loaded = load_for_inference("random:tiny-t5")  # the inference path `batch` loads through
    settings = GenerationSettings(max_new_tokens=8)
    expected = [t for k in range(0, 10, 4) for t in generate(loaded, texts[k : k + 4], settings).texts]
    table = pq.read_table(out / "shards")
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(10)]
    assert table.column("summary").to_pylist() == expected
    row = table.slice(0, 1).to_pylist()[0]
    assert row["model"] == "random:tiny-t5" and row["adapter"] is None and row["random_weights"] is True
    assert json.loads(row["generation"])["max_new_tokens"] == 8
    assert "{dialogue}" in json.loads(row["prompt"])["template"]
    assert row["dialogtune_version"] == dialogtune.__version__
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert [(s["first_row"], s["rows"], s["summaries"]) for s in manifest["shards"]] == [
        (0, 4, 4),
        (4, 4, 4),
        (8, 2, 2),
    ]
    assert manifest["totals"] == {"rows": 10, "summaries": 10, "errors": 0, "errors_file": "errors.jsonl"}
    assert (out / "errors.jsonl").read_text() == ""


def test_bad_rows_go_to_the_errors_file(tmp_path, capsys):
    good = dialogues(3)
    lines = [
        json.dumps({"id": "a", "dialogue": good[0]}),
        json.dumps({"id": "b", "dialogue": "  "}),
        json.dumps({"id": "c", "dialogue": 42}),
        json.dumps({"dialogue": good[1]}),
        json.dumps({"id": ["x"], "dialogue": good[1]}),
        '{"id": "f", "dialogue": "cut',
        "[1, 2]",
        "",
        json.dumps({"id": 7, "dialogue": good[2]}),
        json.dumps({"id": "g", "dialogue": None}),
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "h", "dialogue": "\xff"}\n')
    out = tmp_path / "out"
    assert main(batch_args(src, out, "--shard-size", "4", "--format", "jsonl")) == 0
    stdout = capsys.readouterr().out
    assert "8 bad rows (not summarized) listed in" in stdout

    rows = [
        json.loads(line) for p in sorted((out / "shards").iterdir()) for line in p.read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == ["a", "7"]
    assert all(r["summary"] and r["model"] == LLAMA for r in rows)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["where"]) for e in errors] == [
        ("b", f"{src}:2"),
        ("c", f"{src}:3"),
        (None, f"{src}:4"),
        (None, f"{src}:5"),
        (None, f"{src}:6"),
        (None, f"{src}:7"),
        ("g", f"{src}:10"),
        (None, f"{src}:11"),
    ]
    assert [e["reason"] for e in errors] == [
        "column 'dialogue' is empty",
        "column 'dialogue' must be a string, got number",
        "missing id (column 'id')",
        "column 'id' must be a string or an integer, got list",
        "malformed JSON (Unterminated string starting at, column 25)",
        "expected a JSON object, got list",
        "no dialogue (column 'dialogue' is missing or null)",
        "not valid UTF-8",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["summaries"] == 2 and manifest["totals"]["errors"] == 8
    assert sum(s["rows"] for s in manifest["shards"]) == 10  # the blank line is no row

    # A rerun skips every shard, and counts what they hold (summaries and bad rows) again.
    assert main(batch_args(src, out, "--shard-size", "4", "--format", "jsonl")) == 0
    assert "(3 already done, skipped): 2 summaries" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["totals"] == manifest["totals"]
    assert [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()] == errors


KILLER = """
import os, signal, sys
import pyarrow.parquet as pq

real, calls = pq.write_table, []

def write_table(table, where, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # die half-way through the 4th shard: a temp file, no shard
        where.write(b"PAR1 cut short")
        where.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(table, where, **kwargs)

pq.write_table = write_table
from dialogtune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_job_resumes_without_rewriting_finished_shards(tmp_path, capsys):
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"d{i}", "dialogue": d} for i, d in enumerate(dialogues(24))]
    )
    out = tmp_path / "out"
    args = batch_args(src, out, "--shard-size", "3")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    done = sorted((out / "shards").glob("part-*.parquet"))
    assert [p.name for p in done] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert len(list((out / "shards").glob(".part-00003.parquet.*.tmp"))) == 1  # the cut-short write
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}

    assert main(args) == 0
    assert "(3 already done, skipped)" in capsys.readouterr().out
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == before
    assert not list(out.rglob("*.tmp"))
    assert len(list((out / "shards").glob("part-*.parquet"))) == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["run"]["shards_skipped"] == 3
    assert manifest["run"]["rows"] == 15

    fresh = tmp_path / "fresh"
    assert main(batch_args(src, fresh, "--shard-size", "3")) == 0
    assert shard_table(out).equals(shard_table(fresh))
    assert shard_table(out).column("id").to_pylist() == [f"d{i}" for i in range(24)]

    # A finished job reruns as a no-op.
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("0 rows, ")


def test_glob_of_files_limit_and_shards_per_file(tmp_path):
    texts = dialogues(9)
    write_jsonl(tmp_path / "a.jsonl", [{"key": f"a{i}", "text": t} for i, t in enumerate(texts[:5])])
    write_jsonl(tmp_path / "b.jsonl", [{"key": f"b{i}", "text": t} for i, t in enumerate(texts[5:])])
    files = find_inputs(str(tmp_path / "*.jsonl"))
    shards = plan_shards(files, 2, "key", "text", limit=7)
    # Shards never straddle files; the limit cuts the last one.
    assert [(Path(s.path).name, s.start, s.rows) for s in shards] == [
        ("a.jsonl", 0, 2),
        ("a.jsonl", 2, 2),
        ("a.jsonl", 4, 1),
        ("b.jsonl", 0, 2),
    ]
    assert read_shard(shards[3], "key", "text").column("id").to_pylist() == ["b0", "b1"]
    report = run_batch(
        BatchConfig(
            input=str(tmp_path / "*.jsonl"),
            output=str(tmp_path / "out"),
            job=ModelJob(model=LLAMA, generation=GenerationSettings(max_new_tokens=4)),
            shard_size=2,
            limit=7,
            id_column="key",
            dialogue_column="text",
        ),
        progress=False,
    )
    assert (report.rows, report.summaries, report.shards) == (7, 7, 4)
    assert shard_table(tmp_path / "out").column("id").to_pylist() == [
        "a0",
        "a1",
        "a2",
        "a3",
        "a4",
        "b0",
        "b1",
    ]


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (lambda d: d / "nope.jsonl", [], "nope.jsonl: no such file or directory"),
        (lambda d: d, [], "no data files (.jsonl, .json, .csv, .parquet) in this directory"),
        (lambda d: d / "*.parquet", [], "matches no data files"),
        (
            lambda d: write_jsonl(d / "x.jsonl", [{"id": "1", "text": "hi"}]),
            [],
            "x.jsonl:1: no column 'dialogue' (found: id, text); use --dialogue-column",
        ),
        (
            lambda d: write_jsonl(d / "x.jsonl", [{"dialogue": "hi"}]),
            [],
            "x.jsonl:1: no column 'id' (found: dialogue); use --id-column",
        ),
        (
            lambda d: write_jsonl(d / "x.jsonl", [{"id": "1", "dialogue": "hi"}]),
            ["--num-workers", "2"],
            "--num-workers is for --engine ray",
        ),
        (
            lambda d: write_jsonl(d / "x.jsonl", [{"id": "1", "dialogue": "hi"}]),
            ["--adapter", "no-such-adapter"],
            "adapter directory not found: no-such-adapter",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, setup, extra, message):
    src = setup(tmp_path)
    assert main([*batch_args(src, tmp_path / "out", *extra)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_gpus_per_worker_must_be_a_finite_non_negative_number(tmp_path, capsys, value):
    src = write_jsonl(tmp_path / "x.jsonl", [{"id": "1", "dialogue": "hi"}])
    with pytest.raises(SystemExit) as exit_info:  # an argparse usage error, before any work
        main([*batch_args(src, tmp_path / "out", "--engine", "ray", "--gpus-per-worker", value)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: ") and err.count("\n") == 1
    assert "--gpus-per-worker: expected a finite number >= 0" in err
    assert not (tmp_path / "out").exists()


def test_output_directory_is_never_taken_over(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "dialogue": dialogues(1)[0]}])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(batch_args(src, mine)) == 2
    assert "exists and is not a dialogtune batch output (holds notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "out"
    assert main(batch_args(src, out)) == 0
    capsys.readouterr()
    # Other settings on the same directory would mix two jobs' outputs: refused, nothing touched.
    stamp = (out / "shards" / "part-00000.parquet").stat().st_mtime_ns
    assert main([*batch_args(src, out), "--max-new-tokens", "9"]) == 2
    assert "holds a batch job with other generation; use another --output" in capsys.readouterr().err
    assert (out / "shards" / "part-00000.parquet").stat().st_mtime_ns == stamp


def test_ray_engine_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "dialogue": dialogues(1)[0]}])
    assert main(batch_args(src, tmp_path / "out", "--engine", "ray")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[scale]"' in err
    assert not (tmp_path / "out").exists()
