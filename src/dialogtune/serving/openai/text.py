"""Generated tokens to text, piece by piece, as the text becomes final.

:class:`TextStream` is used for streamed and for whole responses alike, so the two are the
same text by construction. Three things decide when text is final:

* **Characters**: a token may end inside a UTF-8 character (byte-level vocabularies split
  "é" in two), or change how the previous one is shown. Each step decodes a small window,
  from the last point where the text was whole, and releases the new text only when the
  window does not end in a half character (the replacement character U+FFFD), as
  text-generation-inference and vLLM do. The pieces add up to ``tokenizer.decode(tokens)``.
* **Stop strings**: the text is cut where the first one starts, and the stop string is not
  returned. While the text ends with the beginning of a stop string, that end is held back.
* **Stripping** (``strip=True``, the summarize mode): what ``/v1/summarize`` returns is the
  decoded text stripped, so leading whitespace is dropped and trailing whitespace held back
  until more text follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_HALF = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence


class TextStream:
    """Text of one generated sequence, released as it becomes final."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = (), *, strip: bool = False) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.strip = strip
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far
        self.stopped = False  # a stop string was found; later tokens are ignored
        self._prefix = 0  # decode windows start here (the context for the next piece)
        self._read = 0  # tokens up to here are in ``text``
        self.released = ""  # the text returned so far (push and finish)

    def push(self, token: int) -> str:
        """Add one token; returns the text that became final with it (often "")."""
        if self.stopped:
            return ""
        self.tokens.append(token)
        self.text += self._step()
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the text, once the sequence has ended."""
        if not self.stopped:
            self.text += self._decode(self._prefix, None)[len(self._decode(self._prefix, self._read)) :]
            self._prefix = self._read = len(self.tokens)
        return self._release(final=True)

    def _decode(self, start: int, end: int | None) -> str:
        return self.tokenizer.decode(self.tokens[start:end], skip_special_tokens=True)

    def _step(self) -> str:
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, None)
        if len(after) > len(before) and not after.endswith(_HALF):
            self._prefix, self._read = self._read, len(self.tokens)
            return after[len(before) :]
        return ""

    def _visible(self, final: bool) -> str:
        text = self.text
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, final = text[:cut], True
            self.stopped = True
        elif not final:
            text = text[: len(text) - _held(text, self.stops)]
        if self.strip:
            text = text.strip() if final else text.lstrip().rstrip()
        return text

    def _release(self, final: bool) -> str:
        # The visible text only ever grows: what could still change (a half character, the
        # start of a stop string, trailing whitespace) was never released.
        piece = self._visible(final)[len(self.released) :]
        self.released += piece
        return piece


def _held(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins a stop string (it may become one)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def stop_check(tokenizer: Any, stops: Sequence[str]) -> Callable[[list[int]], bool] | None:
    """Whether the tokens generated so far contain a stop string (for the model thread).

    Only the last tokens are decoded: a stop string appears first when the token that
    completes it is chosen, and a string of ``n`` characters spans at most ``4n`` bytes,
    so at most ``4n`` tokens of a byte-level vocabulary (plus a few special tokens, which
    decode to nothing).
    """
    stops = [s for s in stops if s]
    if not stops:
        return None
    window = 4 * max(len(s) for s in stops) + 8

    def check(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(s in text for s in stops)

    return check
