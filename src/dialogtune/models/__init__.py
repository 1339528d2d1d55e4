"""Model specs → loaded model + tokenizer; kind detection; dtype/device; adapters.

Importing the package is cheap: the names below load their modules (and torch) on first use,
so torch-free code (config validation, ``--help``) may import :mod:`dialogtune.models.specs`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CAUSAL": "kinds",
    "IGNORE_INDEX": "kinds",
    "SEQ2SEQ": "kinds",
    "ModelKind": "kinds",
    "kind_for_config": "kinds",
    "LoadedModel": "loaded",
    "innermost": "loaded",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "DEFAULT_MODEL": "specs",
    "ModelSpec": "specs",
    "resolve_spec": "specs",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"dialogtune.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
