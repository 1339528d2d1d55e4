"""The config layer: one YAML reader, one ``--set``, one builder for every config dataclass.

Training configs, experiment files and every section they reuse (``DataConfig``,
``GenerationSettings``, a method's settings, ...) go through these functions, so a value means
the same thing wherever it is written: ``eval.strategy: no`` is the string "no" in a training
config, in an experiment's inline config and in ``--set``. Torch-free, so validating a config
(``dialogtune run --dry-run``, ``train --print-config``) starts in a moment.

* :func:`parse_yaml` — YAML 1.2 booleans (only ``true``/``false``); PyYAML's default YAML 1.1
  would read ``no``, ``off`` and ``y`` as booleans.
* :func:`apply_set` — one ``a.b=c`` override; list items by index or by their ``name``.
* :func:`build` — a dataclass from a mapping, checking every key and value type and naming the key
  at fault (``training.lerning_rate``; did you mean ...) in a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dialogtune import io
from dialogtune.errors import ConfigError, DialogtuneError


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. PyYAML's 1.1 rules read ``strategy: no``
    (transformers' spelling) as ``False``; here it stays the string "no"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, error: type[DialogtuneError] = ConfigError) -> Any:
    """Any YAML file (a saved config), through :func:`dialogtune.io.read_yaml_file`'s checks
    (UTF-8, nesting, lone surrogates: one-line ``error``), with YAML 1.2 booleans."""
    return io.read_yaml_file(path, error, loader=_Yaml12Loader)


def read_yaml_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``); one-line errors.

    Read through :func:`dialogtune.io.read_yaml_file` (UTF-8, nesting and lone-surrogate checks)
    and returned as a deep copy made of plain JSON types, which ``--set`` may change freely; YAML
    dates become their text.
    """
    if not Path(path).exists():
        raise ConfigError(f"{what} not found: {path}")
    loaded = read_yaml(path)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        return json.loads(json.dumps(loaded or {}, default=str))
    except (TypeError, ValueError) as exc:  # e.g. a date as a key
        raise ConfigError(f"{path}: unsupported YAML content ({exc})") from None


def parse_value(text: str, key: str = "") -> Any:
    """A ``--set`` value, read as YAML 1.2 (``1e-3``, ``[q, v]``, ``null``, ``no`` is a string).

    Text that is not YAML (a path with a colon) stays text; values nested too deeply or holding
    lone surrogates are one-line errors.
    """
    name = f"--set {key.strip()}" if key.strip() else "--set"
    io.check_yaml_brackets(name, text, ConfigError)
    if not text.strip():
        return ""
    try:
        value = parse_yaml(text)
    except yaml.YAMLError:
        value = text
    except RecursionError:
        raise ConfigError(f"{name}: value nested too deeply") from None
    io.check_parsed(name, value, ConfigError, what="value")
    return value


def apply_set(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b=c`` override to ``raw`` in place.

    Missing levels are created; list items are picked by index or by their ``name``
    (``variants.lora.set.training.max_steps=5`` reaches the variant named ``lora``).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got '{item}'")
    value = parse_value(text, key)
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: depth + 1]))
            continue
        child = node.get(part)
        if not isinstance(child, (dict, list)):
            child = node[part] = {}
        node = child
    if isinstance(node, list):
        raise ConfigError(f"--set {key}: cannot replace a list item, set one of its keys")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``--set`` item applied (``raw`` itself is left alone)."""
    result = copy.deepcopy(raw)
    for item in overrides:
        apply_set(result, item)
    return result


def _list_item(items: list[Any], part: str, where: str) -> dict[str, Any]:
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    names = [str(i.get("name")) for i in items if isinstance(i, dict)]
    raise ConfigError(f"--set {where}: no item '{part}' (give an index or one of: {', '.join(names)})")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"max_steps": 5}}`` -> ``{"training.max_steps": 5}``: both spellings mean the same."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---- mapping -> dataclasses ------------------------------------------------------------------

Sections = Callable[[str], "type | None"]


def build(cls: type, values: Any, prefix: str = "", *, sections: Sections | None = None) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and value types on the way.

    ``sections``: for a dataclass with a ``sections`` field (the training config), a lookup of
    extra top-level keys (a method's name) to the dataclass that reads them; those are built
    and passed in ``sections={key: object}``.
    """
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "sections"]
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in values.items():
        section = sections(str(key)) if sections is not None and key not in known else None
        if section is not None:
            extra[key] = build(section, value if value is not None else {}, prefix=f"{prefix}{key}.")
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    if sections is not None:
        kwargs["sections"] = extra
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Sections reused from other blocks name their keys by their own short name
        # ("generation.top_p"); say where they sit in this config ("eval.generation.top_p").
        message, short = str(exc), prefix.rstrip(".").rsplit(".", 1)[-1] + "."
        if prefix and short != prefix and message.startswith(short):
            message = prefix + message[len(short) :]
        raise ConfigError(message) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # "1e-3" without a dot is a string even in YAML 1.2's core schema: accept any text float() reads.
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _describe(hint: Any) -> str:
    names = [getattr(a, "__name__", str(a)) for a in typing.get_args(hint) if a is not type(None)]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")
