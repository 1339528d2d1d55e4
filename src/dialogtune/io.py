"""Atomic file writes, fingerprints, and the readers every input file goes through.

Every output file goes through these helpers: the data is written to a temporary
file in the same directory, flushed to disk and renamed over the target, so a
crash (or ``kill -9``) leaves either the old file or the new one, never half of it.

Every file the tool reads (data, configs, run directories, model and adapter JSON) is read
with :func:`read_text_file` / :func:`parse_json` / :func:`read_json_file` / :func:`read_yaml_file`:
whatever is wrong with it (unreadable, a directory, not UTF-8, malformed, nested too deeply,
a lone UTF-16 surrogate that no tokenizer or UTF-8 writer accepts) becomes one line naming the
file, and the line and column where known.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from dialogtune.errors import DataError, DialogtuneError, os_error_reason

# json.loads turns a "\\ud800" escape that is not half of a pair into a lone surrogate: a str that
# tokenizers refuse and UTF-8 cannot encode. Only lines holding such an escape are searched.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Deeper than any real data or config; json.loads itself stops near Python's recursion limit
# (~1000), and a document just under it would crash whatever walks it next (json.dumps, yaml).
MAX_NESTING = 100
_BRACKETS = re.compile(r"[\[\]{}]")


@contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[TextIO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def json_kind(value: object) -> str:
    """A JSON-flavoured type name for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def read_bytes_file(path: str | os.PathLike[str], error: type[DialogtuneError] = DataError) -> bytes:
    """The bytes of ``path``; a missing, unreadable or directory path is one line."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({os_error_reason(exc)})") from None


def decode_utf8(name: str | os.PathLike[str], data: bytes, error: type[DialogtuneError] = DataError) -> str:
    """``data`` as UTF-8 text without a leading BOM; a bad byte is reported with its line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{name}:{line}:{column}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")  # a BOM (Windows editors, Excel) would glue itself to the first key


def read_text_file(path: str | os.PathLike[str], error: type[DialogtuneError] = DataError) -> str:
    """The UTF-8 text of ``path`` (see :func:`read_bytes_file` and :func:`decode_utf8`)."""
    return decode_utf8(path, read_bytes_file(path, error), error)


def find_lone_surrogate(value: Any) -> str | None:
    """Where in a parsed JSON/YAML value a string holds a lone surrogate (``field 'dialogue'``), or None.

    Iterative, so that walking a deep value cannot itself overflow the stack.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "the text"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"a field name in {where}" if where else "a field name"
                stack.append((child, f"{where}.{key}" if where else f"field '{key}'"))
        elif isinstance(item, (list, tuple)):
            stack.extend(
                (child, f"{where}[{i}]" if where else f"item {i + 1}") for i, child in enumerate(item)
            )
    return None


def nesting_depth(value: Any) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar is 0), iteratively."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def check_parsed(
    name: str,
    value: Any,
    error: type[DialogtuneError] = DataError,
    *,
    what: str = "JSON",
    may_nest: bool = True,
    may_hold_surrogates: bool = True,
) -> None:
    """Refuse a parsed value nested deeper than :data:`MAX_NESTING` or holding a lone surrogate.

    ``may_nest`` / ``may_hold_surrogates``: False when a cheap look at the text has ruled it out.
    """
    if may_nest and nesting_depth(value) > MAX_NESTING:
        raise error(f"{name}: {what} nested more than {MAX_NESTING} levels deep")
    if may_hold_surrogates and (where := find_lone_surrogate(value)) is not None:
        raise error(
            f"{name}: {where} holds a lone UTF-16 surrogate, which is not valid Unicode text (an escape "
            "in \\ud800-\\udfff that is not half of a pair, or bytes that are not UTF-8)"
        )


def parse_json(
    name: str | os.PathLike[str],
    text: str,
    error: type[DialogtuneError] = DataError,
    *,
    line: int | None = None,
) -> Any:
    """``json.loads`` where every failure is one line: ``name:line:column: malformed JSON (...)``.

    ``line`` is the line of ``text`` in a JSON-lines file; without it, positions are the text's own.
    Also refused: nesting beyond :data:`MAX_NESTING` levels and lone surrogates (see :func:`check_parsed`).
    """
    where = f"{name}:{line}" if line is not None else str(name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"{name}:{exc.lineno if line is None else line}:{exc.colno}"
        raise error(f"{at}: malformed JSON ({exc.msg})") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise error(f"{where}: malformed JSON ({str(exc).split(';')[0]})") from None
    # Cheap looks at the text first: the walks run only when something could be wrong.
    check_parsed(
        where,
        value,
        error,
        may_nest=text.count("[") + text.count("{") > MAX_NESTING,
        may_hold_surrogates=_SURROGATE_ESCAPE.search(text) is not None,
    )
    return value


def read_json_file(
    path: str | os.PathLike[str],
    error: type[DialogtuneError] = DataError,
    *,
    expect: type | None = dict,
) -> Any:
    """Read and parse a JSON file; with ``expect``, the top level must be of that type."""
    value = parse_json(path, read_text_file(path, error), error)
    if expect is not None and not isinstance(value, expect):
        wanted = "a JSON object" if expect is dict else f"JSON {json_kind(expect())}"
        raise error(f"{path}: expected {wanted}, got {json_kind(value)}")
    return value


def check_yaml_brackets(name: str | os.PathLike[str], text: str, error: type[DialogtuneError]) -> None:
    """Refuse YAML whose ``[``/``{`` nest deeper than :data:`MAX_NESTING` before PyYAML reads it.

    PyYAML's scanner is quadratic in the flow nesting depth (a 100k-deep line would run for
    hours before its parser overflows the stack). Brackets inside quoted strings count too,
    which only matters for strings holding more than a hundred unclosed ones.
    """
    depth = 0
    for bracket in _BRACKETS.findall(text):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_NESTING:
            raise error(f"{name}: YAML nested more than {MAX_NESTING} levels deep")


def read_yaml_file(
    path: str | os.PathLike[str], error: type[DialogtuneError] = DataError, *, loader: Any = None
) -> Any:
    """Read and parse a YAML file (``yaml.SafeLoader`` unless ``loader``); failures are one line."""
    import yaml

    text = read_text_file(path, error)
    check_yaml_brackets(path, text, error)
    try:
        value = yaml.load(text, Loader=loader or yaml.SafeLoader)  # noqa: S506 - safe loaders only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise error(f"{at}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply to read") from None
    check_parsed(str(path), value, error, what="YAML")  # configs are small: always look
    return value


def parse_jsonl(name: str | os.PathLike[str], text: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON-lines text with their 1-based line numbers (blank lines skipped).

    Every problem is a one-line :class:`DataError` naming ``name``, the line and, for bad JSON,
    the column (see :func:`parse_json`). Splits on "\\n" only: ``str.splitlines()`` also breaks on
    U+2028 and friends, which may sit inside JSON strings, and would shift every later line number.
    """
    rows = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        value = parse_json(name, raw, line=line)
        if not isinstance(value, dict):
            raise DataError(f"{name}:{line}: expected a JSON object per line, got {json_kind(value)}")
        rows.append((line, value))
    return rows


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (see :func:`parse_jsonl`)."""
    return [row for _, row in parse_jsonl(path, read_text_file(path))]


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place at the end.

    Used for adapters and models: a reader never finds a half-written weights folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fingerprint_texts(texts: Iterable[str]) -> str:
    """A short, order-sensitive SHA-256 fingerprint of a sequence of strings."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]
