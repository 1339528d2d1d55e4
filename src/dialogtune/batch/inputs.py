"""Input files → a deterministic list of shards, and the rows of one shard.

A shard is a fixed row range of one input file: rows ``[start, start + rows)``. The plan
depends only on the files (path, size, mtime) and the shard size, so a rerun computes the
same shards and can skip the ones already written. Planning reads no dialogue text:
Parquet row counts come from the file footer, JSONL is scanned once for line offsets (a
shard's reader seeks straight to its first line). CSV files and JSON arrays have no cheap
row offsets and are read whole per shard; prefer JSONL or Parquet for large inputs.

A bad row (malformed JSON, a missing id, an empty or non-string dialogue) does not stop
the job: it becomes a row with an ``error`` and no dialogue, reported in ``errors.jsonl``.
Problems with the input as a whole (no such file, no dialogue column) are one-line errors.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dialogtune.data.readers import SUFFIXES, read_file
from dialogtune.errors import DataError
from dialogtune.io import json_kind

# What a shard reader hands to the summarizer: one row per input row, in file order.
READ_SCHEMA = pa.schema(
    [
        ("shard", pa.int64()),
        ("row", pa.int64()),  # 0-based row index within the shard
        ("where", pa.string()),  # file:line or "file row N", for error reports
        ("id", pa.string()),
        ("dialogue", pa.string()),
        ("error", pa.string()),  # null for a good row
    ]
)


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, start + rows)`` of ``path`` (``offset``/``line``: where they begin in a JSONL file)."""

    index: int
    path: str
    kind: str  # "jsonl", "parquet" or "whole" (CSV / JSON array, read in full)
    start: int
    rows: int
    offset: int = 0
    line: int = 1

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_inputs(pattern: str, exclude: str | os.PathLike[str] | None = None) -> list[Path]:
    """The data files named by ``pattern``: a file, a directory (its files, not subfolders) or a glob."""
    path = Path(pattern).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{pattern}: no data files ({', '.join(SUFFIXES)}) in this directory")
    elif glob.has_magic(pattern):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in SUFFIXES]
        if not files:
            raise DataError(f"{pattern}: matches no data files ({', '.join(SUFFIXES)})")
    else:
        raise DataError(f"{pattern}: no such file or directory")
    for file in files:
        if file.suffix.lower() not in SUFFIXES:
            raise DataError(f"{file}: unsupported file type '{file.suffix}' (use {', '.join(SUFFIXES)})")
    if exclude is not None:  # never read our own outputs back as inputs
        out = Path(exclude).resolve()
        files = [f for f in files if out not in f.resolve().parents]
    return files


def plan_shards(
    files: list[Path], shard_size: int, id_column: str, dialogue_column: str, limit: int | None = None
) -> list[Shard]:
    """Cut every file into shards of ``shard_size`` rows (the last one of a file may be shorter)."""
    shards: list[Shard] = []
    left = limit
    for path in files:
        if left is not None and left <= 0:
            break
        kind = _kind(path)
        if kind == "jsonl":
            starts = _jsonl_starts(path, id_column, dialogue_column, shard_size, left)
            total = starts.pop()[0]
        else:
            total = _count_rows(path, kind, id_column, dialogue_column)
            if left is not None:
                total = min(total, left)
            starts = [(start, 0, 1) for start in range(0, total, shard_size)]
        for start, offset, line in starts:
            rows = min(shard_size, total - start)
            shards.append(Shard(len(shards), str(path), kind, start, rows, offset, line))
        if left is not None:
            left -= total
    if not shards:
        raise DataError(f"{', '.join(str(f) for f in files)}: no rows to summarize")
    return shards


def read_shard(shard: Shard, id_column: str = "id", dialogue_column: str = "dialogue") -> pa.Table:
    """The shard's rows as :data:`READ_SCHEMA`, each checked (bad rows carry their ``error``)."""
    if shard.kind == "jsonl":
        raw = _read_jsonl_rows(shard)
    elif shard.kind == "parquet":
        raw = _read_parquet_rows(shard, [id_column, dialogue_column])
    else:
        table = read_file(Path(shard.path))
        raw = [(where, row, None) for where, row in table.rows[shard.start : shard.start + shard.rows]]
    columns: dict[str, list[Any]] = {name: [] for name in READ_SCHEMA.names}
    for row_index, (where, row, problem) in enumerate(raw):
        if row is None:  # the line itself is unreadable
            record_id, dialogue, error = None, None, problem
        else:
            record_id, dialogue, error = check_row(row, id_column, dialogue_column)
        columns["shard"].append(shard.index)
        columns["row"].append(row_index)
        columns["where"].append(where)
        columns["id"].append(record_id)
        columns["dialogue"].append(dialogue)
        columns["error"].append(error)
    return pa.table(columns, schema=READ_SCHEMA)


def check_row(
    row: dict[str, Any], id_column: str, dialogue_column: str
) -> tuple[str | None, str | None, str | None]:
    """``(id, dialogue, error)`` of one input row; ``error`` says what is wrong, or is ``None``."""
    problems = []
    value = row.get(id_column)
    record_id = None
    if value is None:
        problems.append(f"missing id (column '{id_column}')")
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append(f"column '{id_column}' must be a string or an integer, got {json_kind(value)}")
    elif not str(value).strip():
        problems.append(f"missing id (column '{id_column}' is empty)")
    else:
        record_id = str(value)
    dialogue = row.get(dialogue_column)
    problem = dialogue_problem(dialogue, dialogue_column)
    if problem:
        problems.append(problem)
    return record_id, dialogue if not problem else None, "; ".join(problems) or None


def dialogue_problem(value: Any, column: str = "dialogue") -> str | None:
    """Why ``value`` cannot be summarized, or ``None`` if it can."""
    if value is None:
        return f"no dialogue (column '{column}' is missing or null)"
    if not isinstance(value, str):
        return f"column '{column}' must be a string, got {json_kind(value)}"
    if not value.strip():
        return f"column '{column}' is empty"
    return None


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "whole"
    if suffix == ".json":  # a JSON array, or JSON lines under a .json name (as `data` reads it)
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
        return "whole" if head.startswith(b"[") else "jsonl"
    return "jsonl"


def _require_columns(where: str, columns: list[str], id_column: str, dialogue_column: str) -> None:
    # A column missing from the whole file is a wrong flag, not a million bad rows.
    for column, flag in ((dialogue_column, "--dialogue-column"), (id_column, "--id-column")):
        if column not in columns:
            found = ", ".join(columns) if columns else "none"
            raise DataError(f"{where}: no column '{column}' (found: {found}); use {flag}")


def _jsonl_starts(
    path: Path, id_column: str, dialogue_column: str, shard_size: int, limit: int | None
) -> list[tuple[int, int, int]]:
    """``(row, byte offset, line)`` of every shard's first row, then ``(total rows, 0, 0)``."""
    starts: list[tuple[int, int, int]] = []
    rows = offset = 0
    checked = False
    try:
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, 1):
                if limit is not None and rows >= limit:
                    break
                if raw.strip():
                    if not checked:  # the first parseable row decides the schema, as for `data`
                        checked = _check_first_row(path, line_number, raw, id_column, dialogue_column)
                    if rows % shard_size == 0:
                        starts.append((rows, offset, line_number))
                    rows += 1
                offset += len(raw)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    starts.append((rows, 0, 0))
    return starts


def _check_first_row(path: Path, line: int, raw: bytes, id_column: str, dialogue_column: str) -> bool:
    try:
        row = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # a bad row; the next one decides
    if not isinstance(row, dict):
        return False
    _require_columns(f"{path}:{line}", list(row), id_column, dialogue_column)
    return True


def _count_rows(path: Path, kind: str, id_column: str, dialogue_column: str) -> int:
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read as parquet ({' '.join(str(exc).split())[:200]})") from None
        _require_columns(str(path), list(meta.schema_arrow.names), id_column, dialogue_column)
        return meta.metadata.num_rows
    table = read_file(path)
    columns = table.columns if table.columns is not None else list(table.rows[0][1])
    _require_columns(
        table.name if table.columns is not None else table.rows[0][0], columns, id_column, dialogue_column
    )
    return len(table.rows)


def _read_jsonl_rows(shard: Shard) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    rows: list[tuple[str, dict[str, Any] | None, str | None]] = []
    with open(shard.path, "rb") as handle:
        handle.seek(shard.offset)
        for line_number, raw in enumerate(handle, shard.line):
            if len(rows) == shard.rows:
                break
            if not raw.strip():
                continue
            where = f"{shard.path}:{line_number}"
            try:
                value = json.loads(raw.rstrip(b"\r\n").decode("utf-8").removeprefix("\ufeff"))
            except UnicodeDecodeError:
                rows.append((where, None, "not valid UTF-8"))
                continue
            except json.JSONDecodeError as exc:
                rows.append((where, None, f"malformed JSON ({exc.msg}, column {exc.colno})"))
                continue
            if not isinstance(value, dict):
                rows.append((where, None, f"expected a JSON object, got {json_kind(value)}"))
                continue
            rows.append((where, value, None))
    if len(rows) != shard.rows:
        raise DataError(
            f"{shard.path}: changed while the job ran (expected {shard.rows} rows from line {shard.line})"
        )
    return rows


def _read_parquet_rows(
    shard: Shard, columns: list[str]
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Only the row groups that overlap the shard, only the two columns we need."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(shard.path)
    groups, first_row, seen = [], None, 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if seen + size > shard.start and seen < shard.start + shard.rows:
            groups.append(group)
            first_row = seen if first_row is None else first_row
        seen += size
    table = parquet.read_row_groups(groups, columns=columns)
    table = table.slice(shard.start - (first_row or 0), shard.rows)
    return [(f"{shard.path} row {shard.start + i + 1}", row, None) for i, row in enumerate(table.to_pylist())]
