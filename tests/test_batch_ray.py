"""``dialogtune batch --engine ray`` on a local 2-CPU Ray cluster: same output as local, resumes a local run.

Needs the ``scale`` extra (``pip install -e ".[scale]"``, part of ``.[test]``); skipped without Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dialogtune
from dialogtune.batch import BatchConfig, ModelJob, run_batch
from dialogtune.errors import DialogtuneError
from dialogtune.generation import GenerationSettings
from dialogtune.serving.demo_adapters import make_random_adapter

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[scale]")')

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local cluster shared by this module's tests; its workers import this checkout's dialogtune."""
    src = str(Path(dialogtune.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=100 * 2**20,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """24 dialogues and 2 bad rows over two files (a JSONL and a Parquet one)."""
    root = tmp_path_factory.mktemp("batch-ray")
    texts = [
        f"#Person1#: Question {i} about {'the bus' if i % 2 else 'dinner'}?\n#Person2#: "
        + "Yes, " * (i % 4)
        + "ok."
        for i in range(24)
    ]
    rows = [{"id": f"j{i}", "dialogue": t} for i, t in enumerate(texts[:14])]
    rows.insert(5, {"id": "empty", "dialogue": ""})
    (root / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [f"p{i}" for i in range(10)] + ["no-text"]
    pq.write_table(pa.table({"id": ids, "dialogue": texts[14:] + [None]}), root / "b.parquet")
    return root


def config(inputs: Path, out: Path, engine: str, **kwargs) -> BatchConfig:
    return BatchConfig(
        input=str(inputs / "*"),
        output=str(out),
        job=ModelJob(model="random:tiny-llama", generation=GenerationSettings(max_new_tokens=8)),
        engine=engine,
        threads_per_worker=1,
        shard_size=4,
        **kwargs,
    )


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    report = run_batch(config(inputs, out, "local"), progress=False)
    assert (report.summaries, report.errors, report.shards) == (24, 2, 7)
    return out


def outputs(out: Path) -> tuple[list[dict], str]:
    table = pq.read_table(out / "shards").select(["id", "summary", "model", "generation", "random_weights"])
    return table.to_pylist(), (out / "errors.jsonl").read_text()


def test_an_unreachable_cluster_is_one_line_at_once(inputs, tmp_path):
    # First in this module: no Ray session is open yet (one would be used as is).
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(DialogtuneError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        run_batch(config(inputs, tmp_path / "out", "ray", ray_address=f"127.0.0.1:{port}"), progress=False)
    assert time.perf_counter() - started < 30  # ray.init alone would retry for minutes
    assert not (tmp_path / "out").exists()


def test_ray_output_equals_local_row_for_row(ray_cluster, inputs, local_run, tmp_path):
    out = tmp_path / "ray"
    report = run_batch(config(inputs, out, "ray", num_workers=2), progress=False)
    assert (report.rows, report.summaries, report.errors) == (26, 24, 2)
    ray_rows, ray_errors = outputs(out)
    local_rows, local_errors = outputs(local_run)
    assert ray_rows == local_rows
    assert [r["id"] for r in ray_rows] == [f"j{i}" for i in range(14)] + [f"p{i}" for i in range(10)]
    assert len({r["summary"] for r in ray_rows}) > 10  # varied outputs: a meaningful comparison
    assert ray_errors == local_errors and '"id": "empty"' in ray_errors and '"id": "no-text"' in ray_errors
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["engine"] == "ray" and manifest["run"]["num_workers"] == 2


def test_ray_finishes_a_local_run_skipping_done_shards(ray_cluster, inputs, local_run, tmp_path):
    # What a killed local run leaves: its manifest and some finished shards (and their bad rows).
    out = tmp_path / "resumed"
    shutil.copytree(local_run, out)
    shards = sorted((out / "shards").glob("part-*.parquet"))
    for name in [p.name.removesuffix(".parquet") for p in shards[3:]]:
        (out / "shards" / f"{name}.parquet").unlink()
        (out / "errors" / f"{name}.jsonl").unlink(missing_ok=True)
    (out / "errors.jsonl").unlink()
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards[:3]}

    report = run_batch(config(inputs, out, "ray", num_workers=2), progress=False)
    assert (report.shards_skipped, report.rows) == (3, 14)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards[:3]} == kept
    assert outputs(out) == outputs(local_run)


def test_a_model_an_actor_cannot_load_is_one_line(ray_cluster, inputs, tmp_path):
    adapter = make_random_adapter("random:tiny-t5", tmp_path / "t5-adapter", seed=1)
    job = ModelJob(model="random:tiny-llama", adapter=str(adapter))
    bad = BatchConfig(
        input=str(inputs / "*"), output=str(tmp_path / "out"), job=job, engine="ray", num_workers=1
    )
    with pytest.raises(DialogtuneError) as caught:
        run_batch(bad, progress=False)
    # The actor's own message, not Ray's wrapper around it.
    assert str(caught.value).startswith(f"adapter {adapter} was trained for base 'random:tiny-t5'")
    assert not list((tmp_path / "out" / "shards").iterdir())
