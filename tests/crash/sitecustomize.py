"""Test hook: kill this process (SIGKILL, like ``kill -9``) at a chosen moment.

Put this folder first on ``PYTHONPATH`` and set ``DIALOGTUNE_KILL_AT=module:function:n[:when]``:
the n-th call of ``module.function`` SIGKILLs the process ``before`` it runs (default) or
``after`` it returns. ``when=torn`` is for functions returning a writable binary handle
(``dialogtune.predict:_open_partial``): the n-th ``write`` on that handle writes half its
bytes, flushes them to disk and then dies, leaving a line cut in the middle.
Python imports ``sitecustomize`` at start-up, before any dialogtune module, so the patched
function is what every later ``from module import function`` receives.
"""

import importlib
import os
import signal

_SPEC = os.environ.get("DIALOGTUNE_KILL_AT")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _TornHandle:
    def __init__(self, handle, n):
        self._handle, self._n, self._writes = handle, n, 0

    def write(self, data):
        self._writes += 1
        if self._writes == self._n:
            self._handle.write(data[: max(1, len(data) // 2 + 1)])  # +1: usually inside a character
            self._handle.flush()
            os.fsync(self._handle.fileno())
            _die()
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _install(spec: str) -> None:
    module_name, function_name, count, *rest = spec.split(":")
    when = rest[0] if rest else "before"
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        hit = calls["n"] == int(count)
        if hit and when == "before":
            _die()
        result = original(*args, **kwargs)
        if hit and when == "after":
            _die()
        if when == "torn":
            return _TornHandle(result, int(count))
        return result

    setattr(module, function_name, wrapper)


if _SPEC:
    _install(_SPEC)
