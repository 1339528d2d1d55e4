"""TextStream: generated tokens to text as it becomes final (whole characters, stop strings, strip)."""

from __future__ import annotations

import random

import pytest

from dialogtune.models.random_configs import byte_tokenizer
from dialogtune.serving.openai.text import TextStream, stop_check

TOKENIZER = byte_tokenizer(append_eos=False)
TEXT = "Grüße aus 東京 😀!\n\nNext paragraph: naïve café."


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False)["input_ids"]


def run(tokens: list[int], stops=(), strip=False, tokenizer=TOKENIZER) -> tuple[list[str], TextStream]:
    stream = TextStream(tokenizer, stops, strip=strip)
    pieces = [stream.push(t) for t in tokens]
    pieces.append(stream.finish())
    return pieces, stream


def test_pieces_are_whole_characters_and_add_up_to_the_decoded_text():
    tokens = ids(TEXT)
    assert len(tokens) > len(TEXT)  # multi-byte characters span several byte tokens
    pieces, stream = run(tokens)
    assert "".join(pieces) == TEXT == stream.released
    assert all("\ufffd" not in p for p in pieces)  # never half a character
    last = len(TEXT[: TEXT.index("東")].encode()) + 2  # the token of its third byte
    assert pieces[last - 2 : last + 1] == ["", "", "東"]  # released with it, not before


def test_random_bytes_add_up_to_what_decode_gives():
    generator = random.Random(0)
    for _ in range(50):
        tokens = [generator.randrange(3, 259) for _ in range(generator.randrange(1, 40))]
        pieces, _ = run(tokens)
        assert "".join(pieces) == TOKENIZER.decode(tokens)


@pytest.mark.parametrize("stops", [["\n\n"], ["Next", "\n\n"], ["東京", "zzz"]])
def test_text_ends_before_the_first_stop_string(stops):
    pieces, stream = run(ids(TEXT), stops)
    first = min(TEXT.find(s) for s in stops if s in TEXT)
    assert "".join(pieces) == TEXT[:first] and stream.stopped
    # nothing of the stop string was released, even while it was forming
    assert not any(s in "".join(pieces) for s in stops)


def test_a_stop_string_prefix_is_held_back_until_it_resolves():
    stream = TextStream(TOKENIZER, ["STOP"])
    released = [stream.push(t) for t in ids("a ST")]
    assert "".join(released) == "a "  # "ST" might become "STOP"
    assert stream.push(ids("x")[0]) == "STx"  # it did not
    assert stream.finish() == "" and not stream.stopped


def test_strip_mode_drops_outer_whitespace_as_the_summaries_do():
    text = "  \n Hello there.  \n "
    pieces, _ = run(ids(text), strip=True)
    assert "".join(pieces) == "Hello there."
    assert pieces[-1] == ""  # the trailing whitespace was held back, then dropped
    pieces, _ = run(ids("  Hello there. STOP more"), ["STOP"], strip=True)
    assert "".join(pieces) == "Hello there."


def test_stop_check_sees_stop_strings_in_the_last_tokens():
    check = stop_check(TOKENIZER, ["東京", "!!"])
    tokens = ids("x" * 200 + " in 東京")
    assert check(tokens) and not check(tokens[:-1])  # true once the last byte of 京 arrives
    assert stop_check(TOKENIZER, []) is None


@pytest.mark.integration
def test_a_real_bpe_tokenizer_streams_the_same_text():
    from dialogtune.models.loading import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    tokens = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    pieces, _ = run(tokens, tokenizer=tokenizer)
    assert "".join(pieces) == tokenizer.decode(tokens) == TEXT
    assert all("\ufffd" not in p for p in pieces)
