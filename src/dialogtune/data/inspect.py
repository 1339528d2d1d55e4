"""Dataset statistics for ``dialogtune data inspect``: counts, lengths, truncation.

Pure functions over records; the CLI only loads data (and a tokenizer) and prints.
Percentiles use the nearest-rank method, so every number is a length that really
occurs in the data (p50 of [1, 2, 3, 4] is 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from dialogtune.data.records import Record

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def length_stats(lengths: Sequence[int]) -> dict[str, float | int]:
    """``p50/p90/p95/p99/max`` and ``mean`` of a list of lengths."""
    values = sorted(lengths)
    stats: dict[str, float | int] = {f"p{p}": percentile(values, p) for p in PERCENTILES}
    stats["max"] = values[-1] if values else 0
    stats["mean"] = round(sum(values) / len(values), 1) if values else 0.0
    return stats


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts (special tokens included) with a Hugging Face tokenizer, in one batch call."""
    if not texts:
        return []
    # verbose=False: otherwise every text over model_max_length logs a warning.
    encoded = tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
    return [len(ids) for ids in encoded]


def inspect_records(
    records: Sequence[Record],
    tokenizer: Any = None,
    max_length: int = 512,
    prompt_fn: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Counts and length statistics of ``records``.

    Args:
        records: the records to describe.
        tokenizer: a Hugging Face tokenizer; adds token-length statistics and truncation shares.
        max_length: the input budget in tokens; longer inputs would be truncated.
        prompt_fn: turns a dialogue into the model input (e.g. ``PromptTemplate().fill``); when
            given, truncation is also measured on the full prompt, which is what the model sees.

    Returns:
        A JSON-ready dict: ``records``, ``references``, ``dialogue_words``, ``summary_words`` and,
        with a tokenizer, ``dialogue_tokens``, ``summary_tokens``, ``truncated`` (and ``prompt_tokens``).
    """
    per_record = [len(r.references) for r in records]
    summaries = [ref for r in records for ref in r.references]
    result: dict[str, Any] = {
        "records": len(records),
        "references": {
            "total": len(summaries),
            "min_per_record": min(per_record, default=0),
            "max_per_record": max(per_record, default=0),
            "records_without": sum(1 for n in per_record if n == 0),
        },
        # Words as whitespace-separated tokens: cheap, model-free, comparable across runs.
        "dialogue_words": length_stats([len(r.dialogue.split()) for r in records]),
        "summary_words": length_stats([len(s.split()) for s in summaries]),
    }
    if tokenizer is None:
        return result

    dialogue_tokens = token_lengths(tokenizer, [r.dialogue for r in records])
    result["dialogue_tokens"] = length_stats(dialogue_tokens)
    result["summary_tokens"] = length_stats(token_lengths(tokenizer, summaries))
    truncated = {"max_length": max_length, "dialogues": _share(dialogue_tokens, max_length)}
    if prompt_fn is not None:
        prompt_tokens = token_lengths(tokenizer, [prompt_fn(r.dialogue) for r in records])
        result["prompt_tokens"] = length_stats(prompt_tokens)
        truncated["prompts"] = _share(prompt_tokens, max_length)
    result["truncated"] = truncated
    return result


def _share(lengths: Sequence[int], max_length: int) -> dict[str, float | int]:
    count = sum(1 for n in lengths if n > max_length)
    return {"count": count, "share": round(count / len(lengths), 4) if lengths else 0.0}


def format_report(stats: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_records`' result."""
    refs = stats["references"]
    lines = [
        f"records:     {stats['records']}",
        f"references:  {refs['total']} (per record min {refs['min_per_record']}, "
        f"max {refs['max_per_record']}; {refs['records_without']} without)",
    ]
    for key, label in (
        ("dialogue_words", "dialogue words"),
        ("summary_words", "summary words"),
        ("dialogue_tokens", "dialogue tokens"),
        ("prompt_tokens", "prompt tokens"),
        ("summary_tokens", "summary tokens"),
    ):
        if key in stats:
            s = stats[key]
            cells = "  ".join(
                f"{name} {s[name]}" for name in (*(f"p{p}" for p in PERCENTILES), "max", "mean")
            )
            lines.append(f"{label + ':':<17}{cells}")
    if "truncated" in stats:
        t = stats["truncated"]
        for key in ("dialogues", "prompts"):
            if key in t:
                lines.append(
                    f"truncated {key} (> {t['max_length']} tokens): "
                    f"{t[key]['count']} of {stats['records']} ({t[key]['share']:.1%})"
                )
    return "\n".join(lines)
