"""From a data source to validated :class:`Record` objects.

A source is a hub id (``knkarthick/dialogsum``), a directory of split files
(``train.jsonl``, ``validation.csv``, ``test.parquet``, ...) or a single file. Rows that
share the same dialogue text become one record with several references: the hub's
test split has three rows per dialogue (``test_0_1``, ``test_0_2``, ``test_0_3``), which
become record ``test_0`` with three references.

Reference cells may hold a string (one reference) or a list of strings; a null or
blank cell adds no reference, so files made for generation alone (no summaries) load
fine. Callers that score pass ``require_references=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.data.config import DataConfig
from dialogtune.data.readers import SUFFIXES, RowTable, find_split_files, read_file, read_hub
from dialogtune.data.records import Record
from dialogtune.data.sampling import subsample
from dialogtune.errors import DataError
from dialogtune.io import fingerprint_texts, json_kind

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_NUMBERED = re.compile(r"(?P<base>.+)_(?P<n>\d+)")


def load_records(config: DataConfig, *, require_references: bool = False) -> list[Record]:
    """Read ``config.source`` and subsample it (every -> sample -> limit)."""
    records = read_records(
        config.source,
        config.split,
        id_column=config.id_column,
        dialogue_column=config.dialogue_column,
        summary_column=config.summary_column,
        group_by_dialogue=config.group_by_dialogue,
        require_references=require_references,
    )
    return subsample(records, every=config.every, sample=config.sample, seed=config.seed, limit=config.limit)


def read_records(
    source: str | os.PathLike[str],
    split: str = "validation",
    *,
    id_column: str = "id",
    dialogue_column: str = "dialogue",
    summary_column: str | None = None,
    group_by_dialogue: bool = True,
    require_references: bool = False,
) -> list[Record]:
    """Read every record of one split, validated, in order of first appearance.

    Args:
        source: hub id, directory of split files, or a single data file (``split`` is then ignored).
        split: split name; ``validation`` also finds ``val``/``valid``/``dev`` files in a directory.
        id_column: ids are synthesized as ``{split}_{index}`` when the column is absent.
        summary_column: ``None`` picks ``summaries`` if present, else ``summary``, else no references.
        group_by_dialogue: merge rows with identical dialogue text into one multi-reference record.
        require_references: raise if the source has no summary column or a record has no reference.

    Raises:
        DataError: one line naming the file, line (or row) and column at fault.
    """
    rows: list[_Row] = []
    for table in _tables(str(source), split):
        rows.extend(_rows(table, id_column, dialogue_column, summary_column, require_references))
    records, where = _group(rows, split, group_by_dialogue)
    if require_references:
        for record in records:
            if not record.references:
                raise DataError(f"{where[record.id]}: record '{record.id}' has no reference summary")
    return records


def data_fingerprint(records: Iterable[Record]) -> str:
    """A short fingerprint of ids, dialogues and references (recorded in run metadata)."""

    def texts() -> Iterator[str]:
        for record in records:
            # The reference count keeps ("a", "b") and ("a b",) from hashing alike.
            yield from (record.id, record.dialogue, str(len(record.references)), *record.references)

    return fingerprint_texts(texts())


def source_files(config: DataConfig) -> list[Path]:
    """The local files a data config reads (none for a hub id): outputs must never replace them."""
    path = Path(config.source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        try:
            return find_split_files(path, config.split)
        except DataError:
            return []
    return []


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` that is not a path to a data file."""
    return bool(_HUB_ID.fullmatch(source)) and not source.lower().endswith(SUFFIXES)


def _tables(source: str, split: str) -> list[RowTable]:
    path = Path(source).expanduser()
    if path.is_dir():
        return [read_file(p) for p in find_split_files(path, split)]
    if path.is_file():
        return [read_file(path)]
    if looks_like_hub_id(source):
        return [read_hub(source, split)]
    raise DataError(f"{source}: no such file or directory (nor a hub id like owner/name)")


@dataclass
class _Row:
    where: str
    id: str | None
    dialogue: str
    references: list[str]
    topic: str | None


@dataclass
class _Group:
    where: str
    dialogue: str
    topic: str | None
    ids: list[str | None] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


def _rows(
    table: RowTable,
    id_column: str,
    dialogue_column: str,
    summary_column: str | None,
    require_references: bool,
) -> Iterator[_Row]:
    first_where, first_row = table.rows[0]
    # JSON rows carry their own keys: the first row decides the schema, later rows must follow it.
    columns = table.columns if table.columns is not None else list(first_row)
    header_where = table.name if table.columns is not None else first_where
    _require_column(header_where, dialogue_column, columns, "--dialogue-column")
    if summary_column is not None:
        _require_column(header_where, summary_column, columns, "--summary-column")
    else:
        summary_column = next((c for c in ("summaries", "summary") if c in columns), None)
    if summary_column is None and require_references:
        raise DataError(
            f"{table.name}: no reference column 'summaries' or 'summary' (found: {_listed(columns)}); "
            "use --summary-column"
        )
    has_ids = id_column in columns
    for where, row in table.rows:
        yield _Row(
            where=where,
            id=_id(where, row, id_column) if has_ids else None,
            dialogue=_dialogue(where, row, dialogue_column),
            references=_references(where, row, summary_column) if summary_column else [],
            topic=row.get("topic") if isinstance(row.get("topic"), str) else None,
        )


def _require_column(where: str, column: str, columns: list[str], flag: str) -> None:
    if column not in columns:
        raise DataError(f"{where}: no column '{column}' (found: {_listed(columns)}); use {flag}")


def _cell(where: str, row: dict[str, Any], column: str, flag: str) -> Any:
    if column not in row:
        _require_column(where, column, list(row), flag)
    return row[column]


def _dialogue(where: str, row: dict[str, Any], column: str) -> str:
    value = _cell(where, row, column, "--dialogue-column")
    if not isinstance(value, str):
        raise DataError(f"{where}: column '{column}' must be a string, got {json_kind(value)}")
    if not value.strip():
        raise DataError(f"{where}: column '{column}' is empty")
    return value


def _id(where: str, row: dict[str, Any], column: str) -> str:
    value = _cell(where, row, column, "--id-column")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: column '{column}' must be a string or an integer, got {json_kind(value)}")
    if not str(value).strip():
        raise DataError(f"{where}: column '{column}' is empty")
    return str(value)


def _references(where: str, row: dict[str, Any], column: str) -> list[str]:
    value = _cell(where, row, column, "--summary-column")
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise DataError(
            f"{where}: column '{column}' must be a string or a list of strings, got {json_kind(value)}"
        )
    for index, item in enumerate(items, 1):
        if not isinstance(item, str):
            raise DataError(
                f"{where}: column '{column}' must be a list of strings, item {index} is {json_kind(item)}"
            )
    return [item for item in items if item.strip()]


def _group(rows: list[_Row], split: str, group_by_dialogue: bool) -> tuple[list[Record], dict[str, str]]:
    """Records in order of first appearance, and where each record's first row is."""
    groups: dict[object, _Group] = {}
    for index, row in enumerate(rows):
        # dicts keep insertion order: records come out in order of first appearance.
        key: object = row.dialogue if group_by_dialogue else index
        group = groups.setdefault(key, _Group(row.where, row.dialogue, row.topic))
        group.ids.append(row.id)
        group.references.extend(row.references)

    records: list[Record] = []
    seen: dict[str, str] = {}  # id -> where its first row is, for error messages
    for index, group in enumerate(groups.values()):
        record_id = _group_id(group.ids, seen) if group.ids[0] is not None else f"{split}_{index}"
        if record_id in seen:
            raise DataError(f"{group.where}: duplicate id '{record_id}' (first at {seen[record_id]})")
        seen[record_id] = group.where
        records.append(Record(record_id, group.dialogue, tuple(group.references), group.topic))
    return records, seen


def _group_id(ids: list[str | None], taken: dict[str, str]) -> str:
    """``test_0`` for ``test_0_1, test_0_2, test_0_3``; otherwise the first id.

    The suffix is stripped only when every id shares the base and the suffixes count
    1, 2, 3 (or 0, 1, 2): two copies of one dialogue filed as ``train_5`` and
    ``train_900`` must not both become ``train``.
    """
    first = str(ids[0])
    if len(ids) < 2:
        return first
    matches = [_NUMBERED.fullmatch(str(i)) for i in ids]
    if not all(matches):
        return first
    bases = {m.group("base") for m in matches if m}
    numbers = [int(m.group("n")) for m in matches if m]
    consecutive = numbers in (list(range(1, len(ids) + 1)), list(range(len(ids))))
    base = bases.pop()
    if bases or not consecutive or base in taken:
        return first
    return base


def _listed(columns: list[str]) -> str:
    return ", ".join(columns) if columns else "none"
