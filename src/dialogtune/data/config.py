"""Which data to read and which part of it to keep.

Subsampling options combine in one fixed order, applied to *records* (after rows that
share a dialogue are grouped): first ``every`` (keep record ``i`` when ``i % every == 0``),
then ``sample`` (a seeded random sample, kept in original order), then ``limit`` (the
first N). For train/validation, where each dialogue has one row, ``every=100`` keeps the
same rows as the notebook's ``index % 100 == 0`` filter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dialogtune.errors import ConfigError
from dialogtune.seeds import check_seed

DEFAULT_SOURCE = "knkarthick/dialogsum"


@dataclass(frozen=True)
class DataConfig:
    """Where records come from and how they are subsampled (see the module docstring for the order)."""

    source: str = field(
        default=DEFAULT_SOURCE,
        metadata={
            "help": "hub dataset id, a directory of split files, or one .jsonl/.json/.csv/.parquet file"
        },
    )
    split: str = field(default="validation", metadata={"help": "split to read (ignored for a single file)"})
    limit: int | None = field(default=None, metadata={"help": "keep only the first N records (applied last)"})
    every: int | None = field(
        default=None, metadata={"help": "keep records whose index % K == 0 (applied first)"}
    )
    sample: int | None = field(
        default=None, metadata={"help": "seeded random sample of N records, kept in original order"}
    )
    seed: int = field(default=0, metadata={"help": "seed for --sample"})
    id_column: str = field(default="id", metadata={"help": "id column; ids are synthesized if it is absent"})
    dialogue_column: str = field(default="dialogue", metadata={"help": "dialogue text column"})
    summary_column: str | None = field(
        default=None,
        metadata={"help": "reference column (default: 'summaries' list column if present, else 'summary')"},
    )
    group_by_dialogue: bool = field(
        default=True, metadata={"help": "merge rows with the same dialogue into one multi-reference record"}
    )

    def __post_init__(self) -> None:
        for key in ("source", "split", "id_column", "dialogue_column"):
            _check_name(key, getattr(self, key))
        if self.summary_column is not None:
            _check_name("summary_column", self.summary_column)
        for key in ("limit", "every", "sample"):
            value = getattr(self, key)
            # bool is an int subclass; `limit: true` in YAML is a mistake, not 1.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key} must be a positive integer or null, got {value!r}")
        check_seed("data.seed", self.seed)
        if not isinstance(self.group_by_dialogue, bool):
            raise ConfigError(f"data.group_by_dialogue must be true or false, got {self.group_by_dialogue!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a mapping (e.g. the ``data:`` block of a YAML config); unknown keys are errors."""
        if not isinstance(values, dict):
            raise ConfigError(f"data must be a mapping, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown key data.{key} (known: {', '.join(known)})")
        return cls(**values)


def _check_name(key: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"data.{key} must be a non-empty string, got {value!r}")
