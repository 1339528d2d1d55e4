"""Draft tokens copied from a sequence's own text (prompt lookup), checked exactly by the engine.

A summary repeats the dialogue's names and phrases ("#Person1# tells #Person2# that ..."), and
an untuned model's long answers repeat themselves. So the tokens that followed the last earlier
occurrence of a sequence's latest few tokens are a cheap guess at its next ones: transformers
calls this prompt lookup decoding. The engine feeds a draft as extra rows of a decode step and
keeps the tokens up to the first wrong guess (:meth:`RaggedEngine._decode_drafts`); each row
computes exactly what a plain step would, so the output is the same as without drafts, token for
token and bit for bit, and only the number of forward passes changes.

An extra row is not free: drafts pay only while a step's products are bound by reading the
weights, not by arithmetic — a step of a few rows. Measured on SmolLM2-135M (bf16, one CPU
thread, all outputs identical): a lone sequence, which runs as two identical rows anyway
(ragged.py), gains most, 1.4x with an adapter and 1.2x zero-shot with two draft tokens; two
sequences 1.28x; four 1.05x; sixteen nothing (1.00x with one draft token each, 0.87-0.98x with
two). Hence ``ROWS``.
"""

from __future__ import annotations

MAX_MATCH = 3  # the longest suffix looked up
MIN_MATCH = 1  # one matching token is enough: a wrong guess costs little in a step this small
ROWS = 8  # drafts only while a step has at most this many rows (sequences + draft tokens)


def draft(sequence: list[int], limit: int) -> list[int]:
    """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest suffix
    of ``sequence`` (``MAX_MATCH`` down to ``MIN_MATCH`` tokens) that occurred before."""
    if limit <= 0:
        return []
    end = len(sequence)
    for size in range(min(MAX_MATCH, end - 1), MIN_MATCH - 1, -1):
        suffix = sequence[end - size :]
        first = suffix[0]
        # Latest occurrence first: the most recent context is the best guess (a repeated
        # phrase, the name just mentioned); the suffix itself is excluded.
        for start in range(end - size - 1, -1, -1):
            if sequence[start] == first and sequence[start : start + size] == suffix:
                return sequence[start + size : start + size + limit]
    return []


def drafts(sequences: list[list[int]], rooms: list[int], lookahead: int) -> list[list[int]]:
    """The drafts of one decode step: up to ``lookahead`` tokens per sequence, at most ``rooms[i]``
    for sequence ``i``, and at most ``ROWS`` rows in all (one per sequence, one per draft token).
    Sequences earlier in the list draft first."""
    spare = ROWS - len(sequences)
    out: list[list[int]] = []
    for sequence, room in zip(sequences, rooms):
        drafted = draft(sequence, min(lookahead, spare, room))
        spare -= len(drafted)
        out.append(drafted)
    return out
