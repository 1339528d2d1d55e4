"""``run_batch``: plan the shards, skip the finished ones, summarize the rest, write the manifest.

Read top to bottom: inputs → shards → output directory (check or record the job) →
engine → each shard written the moment its last row is back → errors.jsonl + manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from dialogtune.batch.config import BatchConfig, ModelJob
from dialogtune.batch.engines import check_ray, local_results, ray_results
from dialogtune.batch.inputs import Shard, find_inputs, plan_shards
from dialogtune.batch.output import ERRORS, LAYOUT, OutputDir, job_identity, provenance
from dialogtune.errors import ModelSpecError
from dialogtune.models.specs import resolve_spec
from dialogtune.runinfo import package_versions, peak_memory_mb

Engine = Callable[[list[Shard], BatchConfig, dict[str, float]], Iterator[pa.Table]]
ENGINES: dict[str, Engine] = {"local": local_results, "ray": ray_results}


@dataclass
class BatchReport:
    """What a run did (also in ``manifest.json`` under ``run``)."""

    output: Path
    shards: int
    shards_skipped: int
    rows: int  # input rows processed by this run (summarized + bad)
    summaries: int  # in the whole output, this run's and earlier runs'
    errors: int
    seconds: float
    random_weights: bool

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def final_line(self) -> str:
        return f"{self.rows} rows, {self.seconds:.1f} s, {self.rows_per_second:.2f} rows/s"


def run_batch(config: BatchConfig, *, progress: bool | None = None) -> BatchReport:
    """Summarize every row of ``config.input`` into ``config.output``, resuming an earlier run."""
    start = time.perf_counter()
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    random_weights = _check_model(config.job)  # before any work: a typo must not cost a cluster start
    if config.engine == "ray":
        check_ray(config)
    files = find_inputs(config.input, exclude=config.output)
    shards = plan_shards(files, config.shard_size, config.id_column, config.dialogue_column, config.limit)
    out = OutputDir(config.output, config.output_format)
    with out.locked():
        out.start(job_identity(config, files))
        finished = {s.index for s in shards if out.is_done(s)}
        pending = [s for s in shards if s.index not in finished]
        counts = {s.index: out.counts(s) for s in shards if s.index in finished}
        columns = provenance(config, random_weights)
        timings: dict[str, float] = {}
        if pending:
            bar = tqdm(
                total=sum(s.rows for s in pending), desc="batch", unit="row", disable=progress is False
            )
            with bar:
                for shard, results in _complete_shards(
                    ENGINES[config.engine](pending, config, timings), pending
                ):
                    counts[shard.index] = out.write_shard(shard, results, columns)
                    bar.update(shard.rows)
                    timings.setdefault("first_shard_s", time.perf_counter() - start)
        seconds = time.perf_counter() - start
        report = BatchReport(
            output=out.root,
            shards=len(shards),
            shards_skipped=len(shards) - len(pending),
            rows=sum(s.rows for s in pending),
            summaries=sum(c[0] for c in counts.values()),
            errors=sum(c[1] for c in counts.values()),
            seconds=seconds,
            random_weights=random_weights,
        )
        out.finish(shards, _manifest(config, files, shards, counts, report, timings, created))
    return report


def _complete_shards(results: Iterator[pa.Table], pending: list[Shard]) -> Iterator[tuple[Shard, pa.Table]]:
    """Each shard with all its rows, as soon as the last of them is back (engines may split shards)."""
    by_index = {s.index: s for s in pending}
    waiting: dict[int, list[pa.Table]] = {}
    done = 0
    for table in results:
        for index in sorted(set(table.column("shard").to_pylist())):
            waiting.setdefault(index, []).append(table.filter(pc.equal(table.column("shard"), index)))
            if sum(len(t) for t in waiting[index]) == by_index[index].rows:
                done += 1
                yield by_index[index], pa.concat_tables(waiting.pop(index))
    if done != len(pending):  # an engine bug, not a user error: say so loudly
        raise RuntimeError(f"the engine returned {done} of {len(pending)} shards")


def _check_model(job: ModelJob) -> bool:
    """Cheap checks of the model spec and adapter folder; returns whether the weights are random."""
    spec = resolve_spec(job.model)
    if job.adapter is not None:
        folder = Path(job.adapter)
        if not folder.is_dir():
            raise ModelSpecError(f"adapter directory not found: {job.adapter}")
        if not (folder / "adapter_config.json").is_file():
            raise ModelSpecError(f"{job.adapter} is not a PEFT adapter (no adapter_config.json)")
    return spec.is_random


def _manifest(
    config: BatchConfig,
    files: list[Path],
    shards: list[Shard],
    counts: dict[int, tuple[int, int]],
    report: BatchReport,
    timings: dict[str, float],
    created: str,
) -> dict[str, Any]:
    return {
        "layout": LAYOUT,
        "status": "complete",
        "job": job_identity(config, files),
        "versions": package_versions(),
        "shards": [
            {
                "file": f"shards/{s.name}.{config.output_format}",
                "source": s.path,
                "first_row": s.start,
                "rows": s.rows,
                "summaries": counts[s.index][0],
                "errors": counts[s.index][1],
            }
            for s in shards
        ],
        "totals": {
            "rows": sum(s.rows for s in shards),
            "summaries": report.summaries,
            "errors": report.errors,
            "errors_file": ERRORS,
        },
        "run": {
            "created": created,
            "engine": config.engine,
            "ray_address": config.ray_address,
            "num_workers": timings.get("workers", 1) if config.engine == "ray" else 1,
            "threads_per_worker": config.threads_per_worker,
            "gpus_per_worker": config.gpus_per_worker,
            "shards_skipped": report.shards_skipped,
            "rows": report.rows,
            "seconds": round(report.seconds, 3),
            "rows_per_second": round(report.rows_per_second, 3),
            # This process: with --engine local that is the model's memory (a sizing figure);
            # with Ray only the driver's (actors report theirs in Ray's dashboard).
            "peak_memory_mb": peak_memory_mb(),
            # engine start: model load (local) or Ray start/connect (ray, actors load later)
            **{key: round(value, 3) for key, value in timings.items() if key.endswith("_s")},
        },
    }
