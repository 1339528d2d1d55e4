"""Dataset statistics for ``dialogtune data inspect``: counts, lengths, truncation.

Pure functions over records; the CLI only loads data (and a tokenizer) and prints.
Percentiles use the nearest-rank method, so every number is a length that really
occurs in the data (p50 of [1, 2, 3, 4] is 2).

The work per record is bounded: words are counted in 1 MB pieces, and tokens only up to a
cap (``max(4 * max_length, 16384)`` by default, far above any input budget): a longer text is
counted as ``cap + 1`` from a prefix (``encode_prefix``), so one 50 MB line costs what a
long dialogue does instead of gigabytes and minutes. The result says how many were capped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from dialogtune.data.records import Record

PERCENTILES = (50, 90, 95, 99)
MIN_TOKEN_CAP = 16_384  # token counts stop here (or at 4x the input budget, if more)
_WORD_CHUNK = 1 << 20  # characters split at a time when counting words


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


def word_count(text: str) -> int:
    """``len(text.split())`` without building the list of words of a huge text at once."""
    if len(text) <= _WORD_CHUNK:
        return len(text.split())
    count, after_space = 0, True
    for start in range(0, len(text), _WORD_CHUNK):
        piece = text[start : start + _WORD_CHUNK]
        count += len(piece.split())
        if not after_space and not piece[0].isspace():
            count -= 1  # one word cut in two by the chunk boundary
        after_space = piece[-1].isspace()
    return count


def token_lengths(tokenizer: Any, texts: Sequence[str], cap: int | None = None) -> list[int]:
    """Token counts (special tokens included) with a Hugging Face tokenizer.

    With ``cap``, a count above it is reported as ``cap + 1``, and a text too long to stay under
    it costs only the tokenization of a prefix; the others go in one batch call.
    """
    if not texts:
        return []
    from dialogtune.models.kinds import CHARS_PER_TOKEN, SLACK_TOKENS, encode_prefix

    limit = len(texts) if cap is None else cap + 1
    budget = None if cap is None else (limit + SLACK_TOKENS) * CHARS_PER_TOKEN
    short = [i for i, text in enumerate(texts) if budget is None or len(text) <= budget]
    counts = [0] * len(texts)
    # verbose=False: otherwise every text over model_max_length logs a warning.
    encoded = (
        tokenizer([texts[i] for i in short], add_special_tokens=True, verbose=False)["input_ids"]
        if short
        else []
    )
    for i, ids in zip(short, encoded):
        counts[i] = len(ids) if cap is None else min(len(ids), limit)
    for i in sorted(set(range(len(texts))) - set(short)):
        counts[i] = len(encode_prefix(tokenizer, texts[i], limit, add_special_tokens=True, verbose=False))
    return counts


def inspect_records(
    records: Sequence[Record],
    tokenizer: Any = None,
    max_length: int = 512,
    prompt_fn: Callable[[str], str] | None = None,
    token_cap: int | None = None,
) -> dict[str, Any]:
    """Counts and length statistics of ``records``.

    Args:
        records: the records to describe.
        tokenizer: a Hugging Face tokenizer; adds token-length statistics and truncation shares.
        max_length: the input budget in tokens; longer inputs would be truncated.
        prompt_fn: turns a dialogue into the model input (e.g. ``PromptTemplate().fill``); when
            given, truncation is also measured on the full prompt, which is what the model sees.
        token_cap: token counts stop at this many (default ``max(4 * max_length, 16384)``).

    Returns:
        A JSON-ready dict: ``records``, ``references``, ``dialogue_words``, ``summary_words`` and,
        with a tokenizer, ``dialogue_tokens``, ``summary_tokens``, ``truncated`` (and ``prompt_tokens``),
        and ``capped`` when some texts were longer than the token cap.
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
        "dialogue_words": length_stats([word_count(r.dialogue) for r in records]),
        "summary_words": length_stats([word_count(s) for s in summaries]),
    }
    if tokenizer is None:
        return result

    cap = token_cap or max(4 * max_length, MIN_TOKEN_CAP)
    dialogue_tokens = token_lengths(tokenizer, [r.dialogue for r in records], cap)
    summary_tokens = token_lengths(tokenizer, summaries, cap)
    result["dialogue_tokens"] = length_stats(dialogue_tokens)
    result["summary_tokens"] = length_stats(summary_tokens)
    truncated = {"max_length": max_length, "dialogues": _share(dialogue_tokens, max_length)}
    capped = {"dialogues": _over(dialogue_tokens, cap), "summaries": _over(summary_tokens, cap)}
    if prompt_fn is not None:
        prompt_tokens = token_lengths(tokenizer, [prompt_fn(r.dialogue) for r in records], cap)
        result["prompt_tokens"] = length_stats(prompt_tokens)
        truncated["prompts"] = _share(prompt_tokens, max_length)
        capped["prompts"] = _over(prompt_tokens, cap)
    result["truncated"] = truncated
    if any(capped.values()):
        result["capped"] = {"tokens": cap, **capped}
    return result


def _over(lengths: Sequence[int], cap: int) -> int:
    return sum(1 for n in lengths if n > cap)


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
    if "capped" in stats:
        c = stats["capped"]
        counts = ", ".join(f"{c[k]} {k}" for k in ("dialogues", "prompts", "summaries") if c.get(k))
        lines.append(f"longer than {c['tokens']} tokens, counted as {c['tokens'] + 1}: {counts}")
    if "truncated" in stats:
        t = stats["truncated"]
        for key in ("dialogues", "prompts"):
            if key in t:
                lines.append(
                    f"truncated {key} (> {t['max_length']} tokens): "
                    f"{t[key]['count']} of {stats['records']} ({t[key]['share']:.1%})"
                )
    return "\n".join(lines)
