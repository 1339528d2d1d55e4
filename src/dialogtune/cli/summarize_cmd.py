"""``dialogtune summarize``: summaries for a dialogue (plain text) or many (JSONL), from a file or stdin.

Plain text in → the summary printed as text. JSONL in (one object per line with a
``dialogue`` field) → JSONL out: each input object with a ``prediction`` field added,
in input order (the predictions-file field name, so ``dialogtune score`` reads it;
``summary`` is left alone because DialogSum uses it for the reference).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialogtune.cli.model_args import (
    add_generation_args,
    add_model_args,
    inference_inputs,
    load_inference_model,
)
from dialogtune.errors import ConfigError, DataError
from dialogtune.io import decode_utf8, parse_jsonl, read_bytes_file

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass
class SummarizeInput:
    """What was read: the dialogues and, for JSONL, the rows they came from."""

    dialogues: list[str]
    rows: list[dict[str, Any]] | None  # None: plain text (one dialogue)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        nargs="?",
        default=None,
        metavar="FILE",
        help="a text file (one dialogue) or JSONL file (one object per line); - or absent: stdin",
    )
    parser.add_argument(
        "--format",
        choices=["auto", "text", "jsonl"],
        default="auto",
        help="input format; auto: .jsonl files and input whose first line is a JSON object "
        "are JSONL, anything else is one plain-text dialogue (default: auto)",
    )
    parser.add_argument(
        "--dialogue-column",
        metavar="FIELD",
        default="dialogue",
        help="JSONL field holding the dialogue (default: %(default)s)",
    )
    add_model_args(parser)
    add_generation_args(parser)
    parser.set_defaults(func=run)


def read_text(source: str | None) -> tuple[str, str]:
    """(name for messages, decoded content) of a file or stdin."""
    if source is None or source == "-":
        if source is None and sys.stdin.isatty():
            raise ConfigError("no input: pass a FILE, or pipe a dialogue into 'dialogtune summarize -'")
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        if not Path(source).exists():
            raise DataError(f"input file not found: {source}")
        data, name = read_bytes_file(source), source
    return name, decode_utf8(name, data)  # a BOM from Windows editors is dropped


def _looks_like_jsonl(name: str, text: str) -> bool:
    if name.lower().endswith(JSONL_SUFFIXES):
        return True
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):  # not JSON after all (or absurdly nested): plain text
        return False


def parse_input(name: str, text: str, fmt: str = "auto", column: str = "dialogue") -> SummarizeInput:
    """Split the content into dialogues; every problem names the source and line."""
    if fmt == "text" or (fmt == "auto" and not _looks_like_jsonl(name, text)):
        if not text.strip():
            raise DataError(f"{name}: empty input (no dialogue to summarize)")
        return SummarizeInput([text.strip()], None)
    rows: list[dict[str, Any]] = []
    for number, row in parse_jsonl(name, text):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            found = "missing" if column not in row else f"not a non-empty string ({json.dumps(value)[:40]})"
            raise DataError(
                f"{name}:{number}: field '{column}' is {found}"
                + ("" if column in row else f"; fields: {', '.join(sorted(row))[:120]}")
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{name}: empty input (no JSON lines)")
    return SummarizeInput([row[column] for row in rows], rows)


def run(args: argparse.Namespace) -> int:
    settings, template = inference_inputs(args)  # bad flags fail before stdin is read
    name, text = read_text(args.input)
    parsed = parse_input(name, text, args.format, args.dialogue_column)

    from dialogtune.generation import generate

    loaded = load_inference_model(args, settings)
    texts = generate(loaded, parsed.dialogues, settings, template).texts
    random_weights = loaded.spec.is_random
    if random_weights:
        print(f"dialogtune: note: {loaded.spec.display_name}: the summaries mean nothing", file=sys.stderr)
    if parsed.rows is None:
        print(texts[0])
        return 0
    for row, summary in zip(parsed.rows, texts):
        out = {**row, "prediction": summary}
        if random_weights:
            out["random_weights"] = True
        print(json.dumps(out, ensure_ascii=False))
    return 0
