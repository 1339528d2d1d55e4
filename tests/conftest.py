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


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory) -> dict[str, str]:
    """Two random LoRA adapters for ``random:tiny-llama``, "a0" and "a1" (seeds 1 and 2)."""
    from dialogtune.serving.demo_adapters import make_random_adapter

    root = tmp_path_factory.mktemp("tiny-adapters")
    return {
        f"a{i}": str(make_random_adapter("random:tiny-llama", root / f"a{i}", seed=i + 1)) for i in range(2)
    }


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
