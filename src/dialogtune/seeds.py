"""Seeds: the one range every seeded library here accepts.

``numpy.random.default_rng`` (bootstrap intervals) refuses negative seeds and
``numpy.random.seed`` (called by transformers' ``set_seed``) anything from 2**32 on;
``random.Random`` and ``torch.manual_seed`` accept more. A seed is therefore an integer
with ``0 <= seed < 2**32`` wherever it is accepted (configs and flags), checked before any
work starts instead of failing inside numpy after a model has loaded or a training ran.
"""

from __future__ import annotations

from dialogtune.errors import ConfigError

SEED_LIMIT = 2**32  # exclusive


def seed_problem(value: object) -> str | None:
    """Why ``value`` is not a usable seed, or ``None`` if it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {value!r}"
    if not 0 <= value < SEED_LIMIT:
        return f"must be from 0 to {SEED_LIMIT - 1} (numpy's range), got {value}"
    return None


def check_seed(key: str, value: object) -> None:
    """Raise a one-line :class:`ConfigError` naming ``key`` when ``value`` is not a usable seed."""
    problem = seed_problem(value)
    if problem is not None:
        raise ConfigError(f"{key} {problem}")
