"""CLI flags made from a config dataclass's fields, so flags, YAML keys and help never drift.

Each field becomes ``--field-name`` (or the name in ``flags``) with the field's ``help`` metadata
and its default shown. Flags default to ``None``, meaning "not given": a verb can then layer the
values it was given over another base (an adapter's saved inference contract, say) with
:func:`given_values` and :func:`dataclasses.replace`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _scalar_type(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else str
    return hint


def add_fields(
    group: argparse._ArgumentGroup | argparse.ArgumentParser,
    cls: type,
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    choices: dict[str, tuple[str, ...]] | None = None,
    types_: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of dataclass ``cls`` (destination ``prefix + field name``)."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        flag = (flags or {}).get(field.name, "--" + field.name.replace("_", "-"))
        default = getattr(defaults, field.name)
        help_text = str(field.metadata.get("help", "")).replace("%", "%%")
        kind = _scalar_type(hints[field.name])
        dest = prefix + field.name
        if kind is bool:
            # A flag that changes the default: --do-sample for False defaults, --no-... for True ones.
            if default:
                flag = (flags or {}).get(field.name, "--no-" + field.name.replace("_", "-"))
            group.add_argument(
                flag, dest=dest, action="store_const", const=not default, default=None, help=help_text
            )
            continue
        group.add_argument(
            flag,
            dest=dest,
            type=(types_ or {}).get(field.name, kind),
            default=None,
            choices=(choices or {}).get(field.name),
            metavar=None if (choices or {}).get(field.name) else field.name.split("_")[-1].upper(),
            help=f"{help_text} (default: {default})",
        )


def given_values(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given on the command line."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, prefix + field.name, None)
        if value is not None:
            values[field.name] = value
    return values
