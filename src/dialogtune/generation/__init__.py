"""Generation: prompts in, summaries out, as fast as the hardware allows.

``from dialogtune.generation import GenerationSettings`` stays light (no torch): configs and
CLI help import it. :func:`generate` and friends (:mod:`~dialogtune.generation.run`) load on
first use.
"""

from __future__ import annotations

from typing import Any

from dialogtune.generation.settings import PRECISIONS, GenerationSettings

_LAZY = ("GenerationResult", "build_prompts", "generate", "generate_ids", "stop_ids")
__all__ = ["PRECISIONS", "GenerationSettings", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dialogtune.generation import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
