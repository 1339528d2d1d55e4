"""What the report computes with, checked once when a run directory is read.

``dialogtune report`` reads files it did not write in this process: a hand-edited
``metrics/<split>.json`` with a mean that is text, scores that are not numbers or a NaN would
otherwise crash it halfway through writing the report. Each file's keys that the report uses
are listed here with their types; a key may be absent or null (older runs lack some), but what
is present must be what it claims, or the report stops with one line naming the file and key.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any

from dialogtune.errors import DataError
from dialogtune.io import json_kind


def lookup(mapping: Any, *paths: str) -> Any:
    """The first non-None value among dotted ``paths`` (``"parameters.trainable"``) in ``mapping``."""
    for path in paths:
        node = mapping
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


# Types by dotted key.
_NUMBER, _INT, _TEXT, _MAP, _LIST = (Real,), (int,), (str,), (dict,), (list,)
_ROUGE_FIELDS = ("mean", "ci_low", "ci_high")
METRICS_TYPES = {
    "n": _INT,
    "n_references": _INT,
    "settings": _MAP,
    "settings.rouge_types": _LIST,
    "max_over_references": _MAP,
    "generation": _MAP,
    "generation.seconds_per_dialogue": _NUMBER,
    "data": _MAP,
    "data.fingerprint": _TEXT,
    "model": _MAP,
}
METADATA_TYPES = {
    "peak_memory_mb": _NUMBER,
    "generation_stats": _MAP,
    "generation_stats.seconds_per_dialogue": _NUMBER,
    "parameters": _MAP,
    "parameters.total": _INT,
    "data_fingerprint": _TEXT,
    "versions": _MAP,
}
CONFIG_TYPES = {"generation": _MAP, "adapter": _TEXT, "model": _TEXT}
TRAIN_CONFIG_TYPES = {"method": _TEXT, "model": _TEXT}
TRAIN_METADATA_TYPES = {
    **{key: _INT for key in ("parameters.total", "parameters.trainable", "trainable_params")},
    **{key: _INT for key in ("trainable_parameters.total", "trainable_parameters.trainable")},
    **{key: _NUMBER for key in ("wall_time_s", "train_wall_time_s", "peak_memory_mb", "tokens_per_second")},
    **{key: _NUMBER for key in ("train.tokens_per_s", "train.tokens_per_second")},
}


def check_types(where: str | Path, mapping: dict[str, Any], types: dict[str, tuple[type, ...]]) -> None:
    """Each dotted key of ``types`` is absent, null or of its type (and its parents are objects)."""
    for key, kinds in types.items():
        node: Any = mapping
        for depth, part in enumerate(parts := key.split(".")):
            if node is None:
                break
            if not isinstance(node, dict):
                raise DataError(
                    f"{where}: {'.'.join(parts[:depth])} must be an object, got {json_kind(node)}"
                )
            node = node.get(part)
        if node is None:
            continue
        if isinstance(node, bool) or not isinstance(node, kinds):
            wanted = {Real: "a number", int: "an integer", str: "text", dict: "an object", list: "a list"}
            raise DataError(f"{where}: {key} must be {wanted[kinds[0]]}, got {json_kind(node)}")
        if isinstance(node, Real) and not math.isfinite(node):
            raise DataError(f"{where}: {key} must be a finite number, got {node}")


def check_metrics(where: Path, metrics: dict[str, Any]) -> None:
    check_types(where, metrics, METRICS_TYPES)
    types = lookup(metrics, "settings.rouge_types") or []
    if not all(isinstance(t, str) for t in types):
        raise DataError(f"{where}: settings.rouge_types must be a list of names")
    for rouge_type in {*types, "rouge1", "rouge2", "rougeL", "rougeLsum"}:
        for key in (rouge_type, f"max_over_references.{rouge_type}"):
            check_types(where, metrics, {key: _MAP})
            for field_name, value in (lookup(metrics, key) or {}).items():
                if field_name in _ROUGE_FIELDS and not _is_score(value):
                    raise DataError(
                        f"{where}: {key}.{field_name} must be a ROUGE score from 0 to 1, got {value!r}"
                    )


def _is_score(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and 0 <= value <= 1


def check_prediction_rows(where: Path, rows: list[dict[str, Any]]) -> None:
    for index, row in enumerate(rows, 1):
        if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
            raise DataError(
                f"{where}: row {index}: id must be text or an integer, got {json_kind(row['id'])}"
            )
        check_types(f"{where}: row {index}", row, {"dialogue": _TEXT, "scores": _MAP, "scores_max": _MAP})
        for key in ("scores", "scores_max"):
            values = row.get(key) or {}
            if not all(_is_score(v) for v in values.values()):
                raise DataError(f"{where}: row {index}: {key} must map metric names to scores from 0 to 1")
