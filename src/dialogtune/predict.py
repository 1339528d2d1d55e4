"""Generate for a list of records, resumably.

The shared engine of ``generate``, ``evaluate`` and the experiment runner. Finished
batches are appended to ``<output>.partial`` as they complete. Its first line is a key
naming the weights (a fingerprint of the model and adapter files), the prompt, the
generation settings and the data (a fingerprint of every id, dialogue and reference), so an
interrupted run resumes only when it would produce the same outputs; anything else starts
afresh. A crash can cut the file anywhere, even inside a UTF-8 character: only whole lines
count, and the torn tail is cut off before new rows are appended.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.fingerprint import digest, weights_fingerprint
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate


def run_key(
    loaded: LoadedModel, settings: GenerationSettings, template: PromptTemplate, records: Sequence[Record]
) -> str:
    """What determines the outputs: weights, prompt, decoding and the data."""
    return digest(
        {
            "model": loaded.describe(),
            "weights": weights_fingerprint(loaded),
            "generation": settings.identity(),
            "prompt": template.to_dict(),
            "data": data_fingerprint(records),
        }
    )


def read_partial(path: Path, key: str) -> tuple[dict[str, str], int]:
    """The finished rows of a partial file made with ``key``, and the byte length of its whole lines.

    A missing file, another key or an unreadable header give ``({}, 0)``: start afresh.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, 0
    lines = data.split(b"\n")
    lines.pop()  # whatever follows the last newline is a torn tail (or empty)
    if not lines:
        return {}, 0
    try:
        header = json.loads(lines[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, 0
    if not isinstance(header, dict) or header.get("key") != key:
        return {}, 0
    done: dict[str, str] = {}
    good = len(lines[0]) + 1
    for raw in lines[1:]:
        try:
            row = json.loads(raw.decode("utf-8"))
            done[str(row["id"])] = str(row["prediction"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
            break  # a damaged line: everything before it is good, everything after is dropped
        good += len(raw) + 1
    return done, good


def _open_partial(path: Path, key: str, good: int):  # -> BinaryIO
    """Open the partial file for appending after its last good byte (a fresh file gets the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if good == 0:
        handle = path.open("wb")
        handle.write((json.dumps({"key": key}) + "\n").encode("utf-8"))
        handle.flush()
        return handle
    handle = path.open("r+b")
    handle.truncate(good)  # drop a torn tail so new rows never glue onto a fragment
    handle.seek(good)
    return handle


def predict_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    settings: GenerationSettings,
    template: PromptTemplate,
    *,
    partial_path: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Predictions in record order, plus timing stats; resumes from ``partial_path``."""
    key = run_key(loaded, settings, template, records)
    partial = Path(partial_path) if partial_path is not None else None
    done, good = read_partial(partial, key) if partial is not None else ({}, 0)
    wanted = {r.id for r in records}
    done = {i: text for i, text in done.items() if i in wanted}
    todo = [r for r in records if r.id not in done]
    handle = _open_partial(partial, key, good) if partial is not None and todo else None

    def save(indices: list[int], texts: list[str]) -> None:
        if handle is None:
            return
        lines = "".join(
            json.dumps({"id": todo[i].id, "prediction": text}, ensure_ascii=False) + "\n"
            for i, text in zip(indices, texts)
        )
        handle.write(lines.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())

    start = time.perf_counter()
    try:
        result = generate(
            loaded, [r.dialogue for r in todo], settings, template, progress=progress, on_batch=save
        )
    finally:
        if handle is not None:
            handle.close()
    done.update({r.id: text for r, text in zip(todo, result.texts)})
    seconds = time.perf_counter() - start
    stats = {
        "n": len(records),
        "resumed": len(records) - len(todo),
        "generation_seconds": round(seconds, 3),
        "seconds_per_dialogue": round(seconds / len(todo), 4) if todo else None,
        "prompt_tokens": result.prompt_tokens,
        "generated_tokens": result.generated_tokens,
        "tokens_per_second": round(result.generated_tokens / seconds, 2) if todo and seconds > 0 else None,
        "processes": result.processes,
        "run_key": key,
    }
    return [done[r.id] for r in records], stats
