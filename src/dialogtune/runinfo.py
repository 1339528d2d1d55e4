"""What every output says about how it was made: versions, git commit, memory, time."""

from __future__ import annotations

import importlib.metadata
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from dialogtune import __version__
from dialogtune.io import write_text

_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "rouge-score", "safetensors")


def package_versions() -> dict[str, str]:
    versions = {"dialogtune": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The commit of the dialogtune checkout in use, with ``+dirty`` if it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and of CUDA, if used), in MiB."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":
        rss_kb /= 1024
    peak = rss_kb / 1024
    try:
        import torch

        if torch.cuda.is_available():
            return round(max(peak, torch.cuda.max_memory_allocated() / 2**20), 1)
    except ImportError:  # pragma: no cover
        pass
    return round(peak, 1)


def run_metadata(started: float, **extra: Any) -> dict[str, Any]:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(time.time() - started, 2),
        "peak_memory_mb": peak_memory_mb(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        **extra,
    }


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
