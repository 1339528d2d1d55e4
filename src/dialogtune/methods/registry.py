"""The methods dialogtune knows: built-in ones by module name, plus any registered at run time.

Everything that offers a choice of method asks here: ``method:`` in a training config (and
``train --set method=...``), ``params --method``, the experiment runner, ``merge`` and
inference loading (which method made this adapter?) and the report.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from dialogtune.errors import ConfigError, DialogtuneError
from dialogtune.io import read_json_file
from dialogtune.methods.base import Method

# Modules under dialogtune.methods, each defining METHOD. A new method: its module and its name here.
BUILTIN = ("full", "lora", "dora", "ia3", "prompt_tuning")

_METHODS: dict[str, Method] = {}
_loaded = False


def _ensure_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN:
        method = importlib.import_module(f"dialogtune.methods.{module}").METHOD
        _METHODS.setdefault(method.name, method)


def register(method: Method) -> Method:
    """Make ``method`` available everywhere by its name (a name may be registered once)."""
    _ensure_builtins()
    if not isinstance(method, Method):
        raise TypeError(f"{method!r} does not have the Method interface (dialogtune.methods.base.Method)")
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"a method named '{method.name}' is already registered")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Forget a method registered at run time (tests); built-in methods stay."""
    _ensure_builtins()
    if name in BUILTIN:
        raise ValueError(f"built-in method '{name}' cannot be unregistered")
    _METHODS.pop(name, None)


def method_names() -> list[str]:
    _ensure_builtins()
    return list(_METHODS)


def all_methods() -> list[Method]:
    _ensure_builtins()
    return list(_METHODS.values())


def find_method(name: str) -> Method | None:
    _ensure_builtins()
    return _METHODS.get(name)


def get_method(name: str) -> Method:
    """The method called ``name``; a one-line error listing the known ones otherwise."""
    method = find_method(str(name))
    if method is None:
        raise ConfigError(f"method must be one of {', '.join(method_names())}, got '{name}'")
    return method


def settings_section(key: str) -> type | None:
    """The settings dataclass read from a config's top-level ``key`` (a method's name), if any."""
    method = find_method(key)
    return method.settings_cls if method is not None else None


def method_for_adapter_config(adapter_config: dict[str, Any]) -> Method | None:
    """The method that made an adapter, from its ``adapter_config.json`` contents."""
    return next((m for m in all_methods() if m.recognises(adapter_config)), None)


def method_of_adapter(folder: str | Path) -> Method | None:
    """The method that made the adapter in ``folder`` (``None``: not one dialogtune knows)."""
    try:
        config = read_json_file(Path(folder, "adapter_config.json"))
    except DialogtuneError:  # missing, unreadable or not JSON: not an adapter we can name
        return None
    return method_for_adapter_config(config)


def method_of_model(model: Any) -> Method | None:
    """The method of the active adapter of a PEFT model (``None`` for a plain model)."""
    configs = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    if not isinstance(configs, dict) or active not in configs:
        return None
    return method_for_adapter_config(configs[active].to_dict())
