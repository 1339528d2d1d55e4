"""Dataset sources, schema validation and subsampling.

``load_records(DataConfig(...))`` is the one call most blocks need; ``read_records``
reads one split without subsampling.
"""

from dialogtune.data.config import DEFAULT_SOURCE, DataConfig
from dialogtune.data.inspect import format_report, inspect_records
from dialogtune.data.records import Record
from dialogtune.data.sampling import every_k, sample_n, subsample, take
from dialogtune.data.sources import data_fingerprint, load_records, looks_like_hub_id, read_records

__all__ = [
    "DEFAULT_SOURCE",
    "DataConfig",
    "Record",
    "data_fingerprint",
    "every_k",
    "format_report",
    "inspect_records",
    "load_records",
    "looks_like_hub_id",
    "read_records",
    "sample_n",
    "subsample",
    "take",
]
