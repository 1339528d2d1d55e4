"""Raw row readers that remember where every row came from.

Each reader returns a :class:`RowTable`: the rows as dicts, each paired with a location
string (``validation.jsonl:12``, ``data.parquet row 3``) so that schema errors further
down can point at the exact line. JSONL and CSV are read through :mod:`dialogtune.io`, so a
non-UTF-8 byte, malformed JSON or a lone surrogate is reported with its line instead of a
traceback.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialogtune.errors import DataError
from dialogtune.hub import go_offline_if_unreachable, hub_host
from dialogtune.io import decode_utf8, json_kind, parse_json, parse_jsonl, read_bytes_file

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# Other names people give the validation split; `--split validation` finds `dev.jsonl`.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "validation": ("validation", "val", "valid", "dev"),
}

# Hub snapshots shard splits as `validation-00000-of-00001.parquet`.
_SHARD = re.compile(r"^(?P<split>.+?)(?:-\d+-of-\d+)?$")

# csv's default field limit (128 KiB) would call a long dialogue "malformed CSV".
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


@dataclass
class RowTable:
    """Rows from one file (or hub split).

    Attributes:
        name: how messages name the source (the path as given, or the hub id).
        columns: header columns, or ``None`` when each row carries its own keys (JSON).
        rows: ``(location, row)`` pairs in file order; locations are 1-based.
    """

    name: str
    columns: list[str] | None
    rows: list[tuple[str, dict[str, Any]]]


def read_file(path: Path) -> RowTable:
    """Read one data file; the format comes from its suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use {', '.join(SUFFIXES)})")
    if suffix == ".parquet":
        table = _read_parquet(path)
    elif suffix == ".csv":
        table = _read_csv(path)
    else:
        table = _read_json(path)
    if not table.rows:
        raise DataError(f"{path}: empty file (no rows)")
    return table


def find_split_files(directory: Path, split: str) -> list[Path]:
    """The file(s) holding ``split`` in a directory of ``<split>.<ext>`` files (or a ``data/`` subfolder)."""
    found: dict[str, list[Path]] = {}
    for folder in (directory, directory / "data"):
        if found or not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                match = _SHARD.match(path.stem)
                found.setdefault(match.group("split") if match else path.stem, []).append(path)
    if not found:
        raise DataError(f"{directory}: no data files ({', '.join(SUFFIXES)}) in this directory")
    wanted = next((names for names in SPLIT_ALIASES.values() if split in names), (split,))
    for name in wanted:
        if name in found:
            paths = found[name]
            if len({p.suffix.lower() for p in paths}) > 1:
                listed = ", ".join(p.name for p in paths)
                raise DataError(f"{directory}: split '{split}' is in several formats ({listed}); keep one")
            return paths
    raise DataError(f"{directory}: no split '{split}' (found: {', '.join(sorted(found))}); use --split")


def read_hub(source: str, split: str) -> RowTable:
    """Read a split from the Hugging Face hub (needs a network; never runs remote code)."""
    offline = go_offline_if_unreachable()
    try:
        import datasets

        with _quiet_hub_logs():
            dataset = datasets.load_dataset(source, split=split)
        rows = dataset.to_list()
        columns = list(dataset.column_names)
    except Exception as exc:  # any failure here (offline, unknown id or split) is the user's to fix
        if offline:
            raise DataError(
                f"could not load dataset '{source}': the hub ({hub_host()}) is unreachable and the dataset is "
                "not in the local cache; pass a local directory or file with --data, "
                "e.g. --data ../shared/data/dialogsum"
            ) from exc
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(
            f"could not load dataset '{source}' split '{split}' from the Hugging Face hub ({reason}); "
            "pass a local directory or file with --data, e.g. --data ../shared/data/dialogsum"
        ) from exc
    name = f"{source} [{split}]"
    if not rows:
        raise DataError(f"{name}: empty split (no rows)")
    return RowTable(name, columns, [(f"{name} row {i}", row) for i, row in enumerate(rows, 1)])


@contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    # Offline, huggingface_hub logs a warning per retry (~25 s of them) before raising;
    # the failure is reported once, as one line, by read_hub.
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _decode(path: Path) -> str:
    return decode_utf8(path, read_bytes_file(path))


def _read_json(path: Path) -> RowTable:
    text = _decode(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return _read_json_array(path, text)
    rows = [(f"{path}:{line}", row) for line, row in parse_jsonl(path, text)]
    return RowTable(str(path), None, rows)


def _read_json_array(path: Path, text: str) -> RowTable:
    items = parse_json(path, text)
    rows: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DataError(f"{path} item {index}: expected a JSON object, got {json_kind(item)}")
        rows.append((f"{path} item {index}", item))
    return RowTable(str(path), None, rows)


def _read_csv(path: Path) -> RowTable:
    text = _decode(path)
    # newline="" keeps quoted multi-line fields intact; reader.line_num counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[str, dict[str, Any]]] = []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
            try:
                fields = next(reader)
            except StopIteration:
                break
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if header is None:
                header = [name.strip() for name in fields]
                duplicates = sorted({name for name in header if header.count(name) > 1})
                if duplicates:
                    raise DataError(f"{path}:{start}: duplicate column name(s) {', '.join(duplicates)}")
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}:{start}: expected {len(header)} fields, found {len(fields)}")
            rows.append((f"{path}:{start}", dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return RowTable(str(path), header or [], rows)


def _read_parquet(path: Path) -> RowTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: cannot read as parquet ({reason})") from None
    rows = table.to_pylist()
    return RowTable(
        str(path), list(table.column_names), [(f"{path} row {i}", r) for i, r in enumerate(rows, 1)]
    )
