"""Which folders and files dialogtune may replace: only its own earlier output, only when asked.

Every output folder dialogtune creates (a training run, an evaluation run, a merged model, an
experiment, ...) carries a small marker file, :data:`MARKER`, naming its *kind*. A command that
is asked to ``--overwrite`` replaces a folder only when the marker (or, for folders written by
older versions, their unmistakable layout) says it is an output of the same kind. A folder
holding anything else — including an empty path, which would mean the working directory — is
refused with one line, and nothing is deleted.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dialogtune import __version__
from dialogtune.errors import ConfigError, DataError
from dialogtune.io import read_json_file, read_yaml_file, write_json

MARKER = ".dialogtune-output.json"
KINDS = ("train", "eval", "merge", "experiment", "batch", "sweep", "report")

# Folders written before markers existed are recognised by their config.yaml keys.
_LEGACY_KEYS = {
    "train": {"model", "method", "training", "lora"},
    "eval": {"model", "data", "generation", "rouge"},
}


def _config_keys(folder: Path, name: str = "config.yaml") -> set[str]:
    try:  # dialogtune.io's reader: also safe from absurdly nested (or hostile) YAML
        loaded = read_yaml_file(folder / name)
    except DataError:
        return set()
    return set(loaded) if isinstance(loaded, dict) else set()


def output_kind(folder: str | os.PathLike[str]) -> str | None:
    """The kind of dialogtune output ``folder`` holds, or ``None`` (absent, empty or not ours)."""
    path = Path(folder)
    try:
        marker = read_json_file(path / MARKER)
        if marker.get("kind") in KINDS:
            return str(marker["kind"])
    except DataError:
        pass
    keys = _config_keys(path)
    for kind, required in _LEGACY_KEYS.items():
        if required <= keys:
            return kind
    if {"baseline", "evaluation"} <= _config_keys(path, "experiment.yaml"):
        return "experiment"
    return None


def mark(folder: str | os.PathLike[str], kind: str, **extra: Any) -> None:
    """Write the marker that makes ``folder`` recognisably a ``kind`` output of dialogtune."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    write_json(
        Path(folder) / MARKER,
        {"kind": kind, "dialogtune": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra},
    )


def _protected(path: Path) -> str | None:
    """Why ``path`` must never be replaced, whatever it holds (or ``None``)."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "it is the filesystem root"
    if resolved == Path.home().resolve():
        return "it is your home directory"
    if resolved == cwd or resolved in cwd.parents:
        return "it is the working directory or one of its parents"
    return None


def refuse_protected(path: Path) -> None:
    reason = _protected(path)
    if reason is not None:
        raise ConfigError(f"refusing to replace {path}: {reason} (nothing was deleted)")


def check_output_path(text: str | os.PathLike[str], what: str) -> Path:
    """A usable output path: non-empty, and not a file where a folder is expected."""
    if not str(text).strip():
        raise ConfigError(f"{what} must be a non-empty path (an empty one would mean the working directory)")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    return path


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def claim_output_dir(
    text: str | os.PathLike[str], kind: str, *, overwrite: bool, what: str = "output folder"
) -> tuple[Path, str]:
    """Check that ``text`` may receive a ``kind`` output; returns (path, state).

    ``state`` is ``"new"`` (absent or empty), ``"ours"`` (an earlier ``kind`` output, left in
    place: the caller resumes or refuses), or ``"replaced"`` (an earlier ``kind`` output that
    ``overwrite`` removed). Anything else is refused with a :class:`ConfigError`; nothing is deleted.
    """
    path = check_output_path(text, what)
    if not path.exists() or is_empty_dir(path):
        return path, "new"
    found = output_kind(path)
    if found != kind:
        holds = f"a dialogtune {found} output" if found else "files dialogtune did not write"
        raise ConfigError(f"{what} {path} holds {holds}; choose another path (nothing was deleted)")
    if not overwrite:
        return path, "ours"
    refuse_protected(path)
    remove_tree(path)
    return path, "replaced"


def remove_tree(path: Path) -> None:
    """Delete a folder we own: renamed aside first, so a crash mid-way never leaves a half-deleted
    folder that still looks like a finished output."""
    aside = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def check_output_file(
    text: str | os.PathLike[str],
    *,
    what: str,
    inputs: Sequence[str | os.PathLike[str]] = (),
    recognise: Callable[[Path], bool] | None = None,
    overwrite: bool = False,
    flag: str = "--overwrite",
) -> Path:
    """Check, before any work is done, that a result can be written to file ``text``.

    Refused: an empty path, a folder, a path under a file, a folder that cannot be created or
    written, any of ``inputs`` (the command's own input files), and an existing file unless
    ``recognise`` says it is an earlier output of this kind and ``overwrite`` was given.
    The parent folder is created.
    """
    if not str(text).strip():
        raise ConfigError(f"{what} must be a non-empty path")
    path = Path(text).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path")
    resolved = path.resolve()
    for item in inputs:
        if Path(item).expanduser().resolve() == resolved:
            raise ConfigError(f"{what} {path} is also an input of this command; choose another path")
    parent = resolved.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {existing} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create folder {parent} ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: folder {parent} is not writable")
    if path.exists():
        if recognise is None or not recognise(path):
            raise ConfigError(f"{what} {path} exists and was not written by dialogtune; choose another path")
        if not overwrite:
            raise ConfigError(f"{what} {path} already exists; pass {flag} to replace it")
    return path
