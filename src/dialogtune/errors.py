"""The one error type users see.

Anything raised as :class:`DialogtuneError` is printed by the CLI as a single line
(``dialogtune: error: ...``) with exit code 2 and no traceback. Raise it for every
problem the user can fix (bad input file, unknown model, bad config value); let
real bugs surface as tracebacks so they get reported.
"""

from __future__ import annotations

import errno


class DialogtuneError(Exception):
    """A user-facing error: one line, exit code ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        # Keep it to one line: multi-line messages break the "one clear line" promise.
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class DataError(DialogtuneError):
    """Bad dataset input: the message names the file, line and column."""


class ModelSpecError(DialogtuneError):
    """A model spec that cannot be resolved (wrong path, unknown alias, ...)."""


class ConfigError(DialogtuneError):
    """A config key or value that does not validate."""


def os_error_reason(exc: OSError) -> str:
    """``Permission denied``, ``is a directory, not a file``, ...: an OSError's reason, in words."""
    if exc.errno == errno.EISDIR:
        return "is a directory, not a file"
    return exc.strerror or str(exc) or type(exc).__name__
