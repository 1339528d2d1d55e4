"""Fingerprints of the weights a model was loaded from, so that outputs are never reused across
different weights (an adapter retrained in place, a model folder whose files changed).

Adapter files are small and hashed whole. Model weight files can be gigabytes: they are
fingerprinted by name, size, modification time and a SHA-256 of three 1 MiB samples (start,
middle, end) — any rewrite changes the time, and a same-size copy of other weights differs in
the samples. Computing it costs milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dialogtune.models.loading import LoadedModel

_SAMPLE = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".json", ".model", ".txt")


def _sampled_digest(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            handle.seek(offset)
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike[str], *, whole: bool = False) -> dict[str, Any]:
    """Name, size, mtime and content hash (sampled, or ``whole``) of one file."""
    file = Path(path)
    stat = file.stat()
    content = hashlib.sha256(file.read_bytes()).hexdigest()[:16] if whole else _sampled_digest(file)
    return {"name": file.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": content}


def folder_fingerprint(folder: str | os.PathLike[str], *, whole: bool = False) -> list[dict[str, Any]]:
    """Fingerprints of the weight, config and tokenizer files directly in ``folder``."""
    root = Path(folder)
    return [
        file_fingerprint(p, whole=whole)
        for p in sorted(root.iterdir())
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith(".")
    ]


def digest(payload: Any) -> str:
    import json

    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(loaded: LoadedModel) -> str:
    """A short hash naming the exact weights behind ``loaded`` (base and adapter)."""
    spec = loaded.spec
    base: Any
    if spec.source == "random":
        location = Path(spec.location)
        base = {"random": spec.location, "seed": loaded.seed}
        if location.is_file():
            base["config"] = file_fingerprint(location, whole=True)
    elif spec.source in ("gguf", "embedded"):
        base = file_fingerprint(spec.location)
    elif spec.source == "dir":
        base = folder_fingerprint(spec.location)
    else:  # hub: the snapshot's commit names the weights exactly
        base = {"hub": spec.location, "commit": getattr(loaded.model.config, "_commit_hash", None)}
    adapter = folder_fingerprint(loaded.adapter, whole=True) if loaded.adapter else None
    return digest({"base": base, "adapter": adapter})
