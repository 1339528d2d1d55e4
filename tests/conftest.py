"""Shared fixtures. Tests are offline and fast; real data comes from ``shared/`` beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The repo is cloned with `shared/` beside it: <root>/main (this repo) and <root>/shared/data/dialogsum.
DIALOGSUM_DIR = Path(
    os.environ.get("DIALOGTUNE_DIALOGSUM_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"
)


@pytest.fixture
def dialogsum_dir() -> Path:
    """The local DialogSum copy (train/validation JSONL); skips the test when it is absent."""
    if not (DIALOGSUM_DIR / "validation.jsonl").is_file():
        pytest.skip(f"DialogSum not found at {DIALOGSUM_DIR} (set DIALOGTUNE_DIALOGSUM_DIR)")
    return DIALOGSUM_DIR
