"""The job's output directory: shards written atomically, bad rows, the manifest, resuming.

Layout::

    OUT/manifest.json             the job (model, settings, inputs), its shards, counts and timing
    OUT/shards/part-00000.parquet id, summary and provenance columns, in input order
    OUT/errors/part-00003.jsonl   bad rows of one shard (only shards that have some)
    OUT/errors.jsonl              all bad rows: id, where (file:line), reason (written at the end)

A shard file appears only complete (temp file + rename), so "the file exists" means
"the shard is done": a rerun skips it without reading it, and a killed job loses at most
the shards in flight. The manifest written at the start records the job; a rerun with
other settings or inputs is refused rather than mixing outputs of two jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dialogtune import __version__
from dialogtune.batch.config import BatchConfig
from dialogtune.batch.inputs import Shard
from dialogtune.errors import DataError, DialogtuneError
from dialogtune.io import atomic_open, write_json

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
LAYOUT = "dialogtune-batch/1"
PROVENANCE = ("model", "adapter", "generation", "prompt", "dialogtune_version", "random_weights")


def job_identity(config: BatchConfig, files: list[Path]) -> dict[str, Any]:
    """What decides the outputs and the shard boundaries; a rerun must match it exactly."""
    job = config.job
    adapter = str(Path(job.adapter).resolve()) if job.adapter else None
    weights = Path(adapter, "adapter_model.safetensors") if adapter else None
    return {
        "model": job.model,
        "adapter": adapter,
        # An adapter retrained in place must not be mixed with its old outputs.
        "adapter_mtime_ns": weights.stat().st_mtime_ns if weights and weights.exists() else None,
        "merge": job.merge,
        "device": job.device,
        "generation": job.generation.identity(),
        "prompt": job.prompt.to_dict(),
        "inputs": [
            {"path": str(f.resolve()), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
            for f in files
        ],
        "limit": config.limit,
        "shard_size": config.shard_size,
        "id_column": config.id_column,
        "dialogue_column": config.dialogue_column,
        "format": config.output_format,
    }


def provenance(config: BatchConfig, random_weights: bool) -> dict[str, Any]:
    """The columns every output row carries: how its summary was made."""
    job = config.job
    return {
        "model": job.model,
        "adapter": str(Path(job.adapter).resolve()) if job.adapter else None,
        "generation": json.dumps(job.generation.identity(), sort_keys=True),
        "prompt": json.dumps(job.prompt.to_dict(), sort_keys=True),
        "dialogtune_version": __version__,
        "random_weights": random_weights,
    }


class OutputDir:
    """One job's directory; use :meth:`locked` around everything that writes to it."""

    def __init__(self, root: str | os.PathLike[str], fmt: str) -> None:
        self.root = Path(root)
        self.fmt = fmt
        self.shards = self.root / "shards"
        self.errors = self.root / "errors"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Two jobs writing one directory would overwrite each other's manifest: refuse the second."""
        if self.root.is_dir() and not (self.root / MANIFEST).exists():
            others = [p.name for p in self.root.iterdir() if p.name != ".lock"]
            if others:  # never write into (or later clean up) a directory the user owns
                raise DataError(
                    f"{self.root}: exists and is not a dialogtune batch output "
                    f"(holds {', '.join(sorted(others)[:3])}); use a new --output directory"
                )
        elif self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: exists and is not a directory; use a new --output directory")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - not POSIX: no lock
                pass
            except OSError:
                raise DialogtuneError(f"{self.root}: another dialogtune batch is writing here") from None
            yield

    def start(self, identity: dict[str, Any]) -> bool:
        """Check (or record) the job; returns whether earlier shards may be reused."""
        manifest = self.root / MANIFEST
        if manifest.is_file():
            try:
                previous = json.loads(manifest.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise DataError(
                    f"{manifest}: not a dialogtune batch manifest; use another --output"
                ) from None
            if not isinstance(previous, dict) or previous.get("layout") != LAYOUT:
                raise DataError(f"{manifest}: not a dialogtune batch manifest; use another --output")
            old = previous.get("job", {})
            changed = [key for key in identity if old.get(key) != identity[key]]
            if changed:
                raise DialogtuneError(
                    f"{self.root} holds a batch job with other {', '.join(changed)}; "
                    "use another --output directory (or rerun with the same settings to resume it)"
                )
            resumed = True
        else:
            resumed = False
        self._remove_stale_temp_files()
        self.shards.mkdir(exist_ok=True)
        self.errors.mkdir(exist_ok=True)
        write_json(manifest, {"layout": LAYOUT, "status": "running", "job": identity})
        return resumed

    def shard_path(self, shard: Shard) -> Path:
        return self.shards / f"{shard.name}.{self.fmt}"

    def error_path(self, shard: Shard) -> Path:
        return self.errors / f"{shard.name}.jsonl"

    def is_done(self, shard: Shard) -> bool:
        return self.shard_path(shard).is_file()

    def write_shard(self, shard: Shard, results: pa.Table, columns: dict[str, Any]) -> tuple[int, int]:
        """Write one shard's summaries (and bad rows); returns ``(summaries, errors)``."""
        rows = sorted(
            results.select(["row", "id", "where", "summary", "error"]).to_pylist(), key=lambda r: r["row"]
        )
        good = [r for r in rows if r["error"] is None]
        bad = [
            {"id": r["id"], "where": r["where"], "reason": r["error"]} for r in rows if r["error"] is not None
        ]
        if bad:  # before the shard: once the shard exists, its errors must too
            with atomic_open(self.error_path(shard)) as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in bad)
        n = len(good)
        table = pa.table(
            {
                "id": pa.array([r["id"] for r in good], pa.string()),
                "summary": pa.array([r["summary"] for r in good], pa.string()),
                **{
                    key: pa.array([value] * n, pa.bool_() if key == "random_weights" else pa.string())
                    for key, value in columns.items()
                },
            }
        )
        if self.fmt == "parquet":
            with atomic_open(self.shard_path(shard), "wb") as handle:
                pq.write_table(table, handle)
        else:
            with atomic_open(self.shard_path(shard)) as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())
        return n, len(bad)

    def counts(self, shard: Shard) -> tuple[int, int]:
        """``(summaries, errors)`` of a shard written by an earlier run (without reading its text)."""
        path = self.shard_path(shard)
        if self.fmt == "parquet":
            summaries = pq.read_metadata(path).num_rows
        else:
            summaries = _count_lines(path)
        errors = _count_lines(self.error_path(shard)) if self.error_path(shard).is_file() else 0
        if summaries + errors != shard.rows:
            raise DataError(
                f"{path}: holds {summaries} summaries and {errors} bad rows for {shard.rows} input rows; "
                "it was changed after it was written: delete it to redo that shard"
            )
        return summaries, errors

    def finish(self, shards: list[Shard], manifest: dict[str, Any]) -> None:
        """Gather every shard's bad rows into ``errors.jsonl``, then mark the job complete."""
        with atomic_open(self.root / ERRORS) as out:
            for shard in shards:
                if self.error_path(shard).is_file():
                    out.write(self.error_path(shard).read_text(encoding="utf-8"))
        write_json(self.root / MANIFEST, manifest)

    def _remove_stale_temp_files(self) -> None:
        # Temp files of a killed run (atomic_open names them ".<target>.<random>.tmp").
        for folder in (self.root, self.shards, self.errors):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
