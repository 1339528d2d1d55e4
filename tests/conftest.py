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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run tiny-model tests on one torch thread, restored afterwards.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core machine every
    parallel op of a 2-thread pool waits for a scheduler slice (measured 10-100x slower).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
