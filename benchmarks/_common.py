"""Helpers shared by the benchmark scripts (data location, result files)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from dialogtune.io import write_json
from dialogtune.runinfo import package_versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def dialogsum_dir() -> Path:
    path = Path(os.environ.get("DIALOGTUNE_DIALOGSUM_DIR") or ROOT.parent / "shared" / "data" / "dialogsum")
    if not (path / "validation.jsonl").is_file():
        raise SystemExit(f"DialogSum not found at {path} (set DIALOGTUNE_DIALOGSUM_DIR)")
    return path


def read_split(split: str, n: int) -> list[dict[str, Any]]:
    with open(dialogsum_dir() / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle)]


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "versions": package_versions(),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {**result, "machine": machine()})
    return path
