"""Subsampling: every k-th item, a seeded random sample, the first N.

:func:`subsample` applies them in the order ``every -> sample -> limit`` (see
:mod:`dialogtune.data.config`). All keep the original order, so a subsample of a
split reads like the split itself and is reproducible from ``(seed, sizes)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def every_k(items: Sequence[T], k: int) -> list[T]:
    """Items whose index ``i`` satisfies ``i % k == 0`` (the notebook's ``index % 100 == 0``)."""
    return list(items[::k])


def sample_n(items: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """A seeded random sample of ``n`` items in their original order (all items if ``n >= len``)."""
    if n >= len(items):
        return list(items)
    # Sample indices, not items: sorting them restores the original order.
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def take(items: Sequence[T], n: int) -> list[T]:
    """The first ``n`` items."""
    return list(items[:n])


def subsample(
    items: Sequence[T],
    *,
    every: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> list[T]:
    """Apply ``every``, then ``sample``, then ``limit``; ``None`` skips a step."""
    out = list(items)
    if every is not None:
        out = every_k(out, every)
    if sample is not None:
        out = sample_n(out, sample, seed)
    if limit is not None:
        out = take(out, limit)
    return out
