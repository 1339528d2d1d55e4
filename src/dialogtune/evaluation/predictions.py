"""Prediction files: our JSONL format, and the tables ``dialogtune score`` accepts.

Our predictions file (JSONL, one row per dialogue)::

    {"id": ..., "dialogue": ..., "references": [...], "prediction": ..., "scores": {...}, "scores_max": {...}}

``scores`` holds the per-example ROUGE F-measures combined over references (mean by default),
``scores_max`` the max over references. :func:`load_scoring_table` also reads CSV/JSONL tables with
one reference per row: the Hugging Face flattened layout (the hub's DialogSum test split has three
rows per dialogue) and the notebook's results CSV (``human_baseline_summaries``,
``original_model_summaries``, ``instruct_model_summaries``, ``peft_model_summaries``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialogtune.data.records import Record
from dialogtune.errors import DataError
from dialogtune.io import parse_jsonl, read_text_file, write_jsonl

REFERENCE_COLUMNS: tuple[str, ...] = ("references", "reference", "summary", "human_baseline_summaries")

# csv's default field limit (128 KiB) would call a long dialogue "malformed CSV".
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
PREDICTION_COLUMNS: tuple[str, ...] = ("prediction", "predictions", "generated_summary", "model_summary")
# The notebook names one column per system: original_/instruct_/peft_model_summaries.
PREDICTION_SUFFIXES: tuple[str, ...] = ("_model_summaries", "_model_summary", "_prediction", "_predictions")
_ROW_ORDER = ("id", "dialogue", "references", "prediction", "scores", "scores_max")

Row = tuple[int, dict[str, Any]]  # (1-based line where the row starts, values)


@dataclass(frozen=True)
class ScoringTable:
    """Examples read from a file for scoring, and which columns they came from."""

    predictions: list[str]
    references: list[list[str]]
    ids: list[str]
    prediction_column: str
    reference_columns: tuple[str, ...]
    n_rows: int


def prediction_row(
    record: Record, prediction: str, per_example: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One predictions-file row; ``per_example`` is an entry of ``compute_metrics``'s second result."""
    row: dict[str, Any] = {**record.to_dict(), "prediction": prediction}
    if row.get("topic") is None:
        del row["topic"]  # most sources have no topic; keep rows to the documented fields
    if per_example is not None:
        row["scores"] = dict(per_example["scores"])
        row["scores_max"] = dict(per_example["scores_max"])
    return row


def write_predictions(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write predictions rows as JSONL, atomically (a crash leaves the old file or the new one)."""
    ordered = []
    for index, row in enumerate(rows):
        if not isinstance(row.get("prediction"), str):
            raise DataError(f"{path}: row {index}: 'prediction' must be text")
        out = {key: row[key] for key in _ROW_ORDER if key in row}
        out["references"] = list(row.get("references", ()))
        out.update({key: value for key, value in row.items() if key not in out})
        ordered.append(out)
    write_jsonl(path, ordered)


def looks_like_predictions(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a predictions file dialogtune wrote (its first row has id and prediction)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(1 << 22)
        row = json.loads(first.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(row, dict) and "id" in row and isinstance(row.get("prediction"), str)


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read our predictions JSONL; each row needs ``id``, ``prediction`` (text), ``references`` (list)."""
    rows = []
    for line, row in parse_jsonl(path, _read_text(path)):
        for key in ("id", "prediction", "references"):
            if key not in row:
                raise DataError(
                    f"{path}:{line}: no {key!r} field (a predictions row needs id, prediction, references)"
                )
        if not isinstance(row["prediction"], str):
            raise DataError(
                f"{path}:{line}: column 'prediction': expected text, got {_kind(row['prediction'])}"
            )
        if not isinstance(row["references"], list) or not all(isinstance(r, str) for r in row["references"]):
            raise DataError(f"{path}:{line}: column 'references': expected a list of texts")
        rows.append(row)
    return rows


def load_scoring_table(
    path: str | os.PathLike[str],
    prediction_column: str | None = None,
    reference_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    dialogue_column: str | None = None,
) -> tuple[list[str], list[list[str]], list[str]]:
    """``(predictions, references, ids)`` from a CSV or JSONL file; see :func:`read_scoring_table`."""
    table = read_scoring_table(path, prediction_column, reference_columns, id_column, dialogue_column)
    return table.predictions, table.references, table.ids


def read_scoring_table(
    path: str | os.PathLike[str],
    prediction_column: str | None = None,
    reference_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    dialogue_column: str | None = None,
) -> ScoringTable:
    """Read predictions and references from a CSV or JSONL file.

    Args:
        path: ``.csv``/``.tsv`` or ``.jsonl``/``.json``; other names are sniffed (``{`` starts JSONL).
        prediction_column: default: the one column named like a prediction (``prediction``,
            ``predictions``, ``*_model_summaries``, ...); several candidates are an error.
        reference_columns: default: the first of ``references``, ``reference``, ``summary``,
            ``human_baseline_summaries``. Several columns give several references per row; a cell
            may hold one text or (JSONL) a list of texts. Empty cells are skipped.
        id_column: default ``id`` when present; otherwise ids are the example numbers ``0, 1, ...``.
        dialogue_column: default ``dialogue`` when present. In the flattened layout (one reference
            text per cell), rows with the same dialogue and the same prediction become one example
            with several references; without a dialogue column each row is its own example.

    Raises:
        DataError: naming the file (and line, column) for anything unreadable.
    """
    rows, columns = _read_rows(path)
    refs_cols = _reference_columns(path, columns, reference_columns)
    pred_col = _prediction_column(path, columns, prediction_column, refs_cols)
    id_col = _optional_column(path, columns, id_column, "id", "--id-column")
    dia_col = _optional_column(path, columns, dialogue_column, "dialogue", "--dialogue-column")

    predictions: list[str] = []
    references: list[list[str]] = []
    ids: list[str] = []
    keys: list[tuple[str, str] | None] = []
    for line, values in rows:
        prediction = _text(path, line, values, pred_col)
        refs, flattened = _references(path, line, values, refs_cols)
        key = (_text(path, line, values, dia_col), prediction) if dia_col and flattened else None
        predictions.append(prediction)
        references.append(refs)
        ids.append(str(values[id_col]) if id_col and values.get(id_col) is not None else "")
        keys.append(key)

    # Group the flattened layout: one example per (dialogue, prediction), references in row order.
    grouped: dict[tuple[str, str], int] = {}
    out_preds: list[str] = []
    out_refs: list[list[str]] = []
    out_ids: list[str] = []
    for prediction, refs, row_id, key in zip(predictions, references, ids, keys, strict=True):
        if key is not None and key in grouped:
            out_refs[grouped[key]].extend(refs)
            continue
        if key is not None:
            grouped[key] = len(out_preds)
        out_preds.append(prediction)
        out_refs.append(list(refs))
        out_ids.append(row_id or str(len(out_ids)))
    return ScoringTable(out_preds, out_refs, out_ids, pred_col, refs_cols, len(rows))


# ----------------------------------------------------------------------------- columns


def _missing_column(path: str | os.PathLike[str], name: str, flag: str, columns: list[str]) -> DataError:
    return DataError(f"{path}: no column {name!r} ({flag}); found columns: {', '.join(map(repr, columns))}")


def _reference_columns(
    path: str | os.PathLike[str], columns: list[str], requested: Sequence[str] | None
) -> tuple[str, ...]:
    if requested:
        for name in requested:
            if name not in columns:
                raise _missing_column(path, name, "--reference-column", columns)
        return tuple(dict.fromkeys(requested))
    for name in REFERENCE_COLUMNS:
        if name in columns:
            return (name,)
    raise DataError(
        f"{path}: no reference column (looked for {', '.join(REFERENCE_COLUMNS)}); "
        f"found columns: {', '.join(map(repr, columns))}; pass --reference-column"
    )


def _prediction_column(
    path: str | os.PathLike[str], columns: list[str], requested: str | None, refs_cols: tuple[str, ...]
) -> str:
    if requested:
        if requested not in columns:
            raise _missing_column(path, requested, "--prediction-column", columns)
        if requested in refs_cols:
            raise DataError(f"{path}: column {requested!r} cannot be both the prediction and a reference")
        return requested
    candidates = [
        c
        for c in columns
        if c not in refs_cols and (c in PREDICTION_COLUMNS or c.endswith(PREDICTION_SUFFIXES))
    ]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise DataError(
            f"{path}: several prediction columns ({', '.join(candidates)}); choose one with --prediction-column"
        )
    raise DataError(
        f"{path}: no prediction column (looked for {', '.join(PREDICTION_COLUMNS)}, *_model_summaries); "
        f"found columns: {', '.join(map(repr, columns))}; pass --prediction-column"
    )


def _optional_column(
    path: str | os.PathLike[str], columns: list[str], requested: str | None, default: str, flag: str
) -> str | None:
    if requested:
        if requested not in columns:
            raise _missing_column(path, requested, flag, columns)
        return requested
    return default if default in columns else None


# ----------------------------------------------------------------------------- cells


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(path: str | os.PathLike[str], line: int, values: dict[str, Any], column: str) -> str:
    if column not in values:
        raise DataError(f"{path}:{line}: no {column!r} field")
    value = values[column]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line}: column {column!r}: expected text, got {_kind(value)}")
    return value


def _references(
    path: str | os.PathLike[str], line: int, values: dict[str, Any], columns: tuple[str, ...]
) -> tuple[list[str], bool]:
    """The row's non-empty reference texts, and whether every cell held a single text (flattened)."""
    refs: list[str] = []
    flattened = True
    for column in columns:
        value = values.get(column)
        if isinstance(value, list):
            flattened = False
            if not all(isinstance(item, str) for item in value):
                raise DataError(f"{path}:{line}: column {column!r}: expected a list of texts")
            refs.extend(item for item in value if item.strip())
        elif isinstance(value, str):
            refs.extend([value] if value.strip() else [])
        elif value is not None:
            raise DataError(f"{path}:{line}: column {column!r}: expected text, got {_kind(value)}")
    if not refs:
        raise DataError(f"{path}:{line}: no reference text in column(s) {', '.join(columns)}")
    return refs, flattened


# ----------------------------------------------------------------------------- files


def _read_text(path: str | os.PathLike[str]) -> str:
    text = read_text_file(path)  # a BOM (Excel puts one in front of CSVs) is dropped
    if not text.strip():
        raise DataError(f"{path}: empty file, no rows to score")
    return text


def _parse_csv(path: str | os.PathLike[str], text: str, delimiter: str) -> tuple[list[Row], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1  # a quoted cell may span several lines
            if not cells:
                continue
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{line}: {len(cells)} fields but the header has {len(header)}")
            rows.append((line, dict(zip(header, cells, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    return rows, header or []


def _read_rows(path: str | os.PathLike[str]) -> tuple[list[Row], list[str]]:
    text = _read_text(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson") or (
        suffix not in (".csv", ".tsv") and text.lstrip().startswith("{")
    ):
        rows = parse_jsonl(path, text)
        columns = list(dict.fromkeys(key for _, values in rows for key in values))
    else:
        rows, columns = _parse_csv(path, text, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise DataError(f"{path}: no rows to score (only a header?)")
    return rows, columns
