"""Generate for a list of records, resumably, and score the result.

The shared engine of ``generate``, ``evaluate`` and the experiment runner. Finished
batches are appended to ``<output>.partial`` as they complete; that file starts with
a key naming the model, adapter, prompt and generation settings, so an interrupted
run resumes only when it would have produced the same outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dialogtune.data.records import Record
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate


def run_key(loaded: LoadedModel, settings: GenerationSettings, template: PromptTemplate) -> str:
    payload = {"model": loaded.describe(), "generation": settings.to_dict(), "prompt": template.to_dict()}
    if loaded.adapter:  # an adapter retrained in place must not reuse old outputs
        weights = Path(loaded.adapter) / "adapter_model.safetensors"
        payload["adapter_mtime"] = weights.stat().st_mtime_ns if weights.exists() else None
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_partial(path: Path, key: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    done: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        header = handle.readline()
        try:
            if json.loads(header).get("key") != key:
                return {}
        except json.JSONDecodeError:
            return {}
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is good
            done[row["id"]] = row["prediction"]
    return done


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
    key = run_key(loaded, settings, template)
    partial = Path(partial_path) if partial_path is not None else None
    done = _read_partial(partial, key) if partial is not None else {}
    todo = [r for r in records if r.id not in done]
    handle = None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        fresh = not done
        handle = partial.open("w" if fresh else "a", encoding="utf-8")
        if fresh:
            handle.write(json.dumps({"key": key}) + "\n")
            handle.flush()

    def save(indices: list[int], texts: list[str]) -> None:
        if handle is None:
            return
        for i, text in zip(indices, texts):
            handle.write(json.dumps({"id": todo[i].id, "prediction": text}, ensure_ascii=False) + "\n")
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
        "generated_tokens": result.generated_tokens,
        "tokens_per_second": round(result.generated_tokens / seconds, 2) if todo and seconds > 0 else None,
        "run_key": key,
    }
    return [done[r.id] for r in records], stats
