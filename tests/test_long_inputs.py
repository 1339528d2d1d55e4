"""Huge dialogues cost what long ones do: truncation and ``data inspect`` tokenize a prefix only.

``truncate_dialogue`` used to tokenize the whole text before cutting it (a 10 MB dialogue took
2.3 GB); it now tokenizes a prefix (``encode_prefix``) and must give exactly what the
whole-text tokenization gave, which is checked against that tokenization on the DialogSum
validation dialogues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dialogtune.data import Record, inspect_records
from dialogtune.data.inspect import word_count
from dialogtune.models.kinds import CAUSAL, SEQ2SEQ, encode_prefix, truncate_dialogue
from dialogtune.models.loading import load_tokenizer

HUGE_CHARS = 20_000_000


def whole_text_truncation(tokenizer, dialogue: str, max_tokens: int) -> str:
    """What truncate_dialogue did before: tokenize everything, then cut."""
    ids = tokenizer(dialogue, add_special_tokens=False)["input_ids"]
    return (
        dialogue if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
    )


def validation_texts(dialogsum_dir: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (dialogsum_dir / "validation.jsonl").read_text().splitlines()]
    return [r["dialogue"] for r in rows], [r["summary"] for r in rows]


def assert_same_as_whole_text(tokenizer, dialogues: list[str], budgets: tuple[int, ...]) -> int:
    cut = 0
    for max_tokens in budgets:
        for dialogue in dialogues:
            expected = whole_text_truncation(tokenizer, dialogue, max_tokens)
            assert truncate_dialogue(tokenizer, dialogue, max_tokens) == expected, (max_tokens, dialogue[:80])
            cut += expected != dialogue
    return cut


def test_truncation_equals_whole_text_tokenization_tiny(dialogsum_dir: Path) -> None:
    dialogues, _ = validation_texts(dialogsum_dir)
    # Budgets small enough that most dialogues are cut (the byte tokenizer: one token per byte).
    cut = assert_same_as_whole_text(load_tokenizer("random:tiny-llama"), dialogues, (7, 300, 1000))
    assert cut > 900  # the comparison covered real cuts, not only dialogues under the budget


@pytest.mark.integration
def test_truncation_and_targets_equal_whole_text_tokenization_embedded(dialogsum_dir: Path) -> None:
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    dialogues, summaries = validation_texts(dialogsum_dir)
    cut = assert_same_as_whole_text(tokenizer, dialogues, (16, 128, 512))
    assert cut > 700
    for summary in summaries:  # training targets are cut the same way
        for n in (1, 8, 20):
            whole = tokenizer(summary.strip(), add_special_tokens=False)["input_ids"][:n]
            assert encode_prefix(tokenizer, summary.strip(), n, add_special_tokens=False) == whole
    example = CAUSAL.encode_example(tokenizer, "Summarize: hi", summaries[0], 5)
    assert (
        example["labels"][-5:-1] == tokenizer(summaries[0].strip(), add_special_tokens=False)["input_ids"][:4]
    )


def test_seq2seq_targets_keep_eos_when_cut() -> None:
    tokenizer = load_tokenizer("random:tiny-t5")  # appends </s>, like T5's tokenizer
    long_summary = "word " * 5000
    labels = SEQ2SEQ.encode_example(tokenizer, "p", long_summary, 12)["labels"]
    whole = tokenizer(text_target=long_summary, add_special_tokens=True)["input_ids"][:12]
    assert labels[:-1] == whole[:-1] and labels[-1] == tokenizer.eos_token_id
    short = SEQ2SEQ.encode_example(tokenizer, "p", "ok", 12)["labels"]
    assert short == tokenizer(text_target="ok", add_special_tokens=True)["input_ids"]


def word_tokenizer():
    """Whitespace-split words, so a run of spaces costs characters but no tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


@pytest.mark.parametrize(
    "text",
    [
        "#Person1#: " + "How are you today? " * (HUGE_CHARS // 19),  # words and spaces
        "x" * HUGE_CHARS,  # one endless word: no space to cut before
    ],
    ids=["words", "no-spaces"],
)
def test_huge_dialogue_truncates_in_bounded_time(text: str) -> None:
    tokenizer = load_tokenizer("random:tiny-llama")  # one token per byte: any prefix tokenizes alike
    started = time.perf_counter()
    out = truncate_dialogue(tokenizer, text, 1024)
    assert time.perf_counter() - started < 3.0  # whole-text tokenization: seconds and gigabytes
    assert out == whole_text_truncation(tokenizer, text[:5000], 1024) == text[:1024]


def test_prefix_grows_until_it_holds_enough_tokens() -> None:
    # 200,000 spaces are no tokens at all for a whitespace-split tokenizer: the first cut
    # holds too few, so the prefix doubles until it reaches the words after the spaces.
    tokenizer = word_tokenizer()
    text = "a" + " " * 200_000 + " b" * 40
    assert encode_prefix(tokenizer, text, 10) == tokenizer(text)["input_ids"][:10] == [1] + [2] * 9
    assert truncate_dialogue(tokenizer, text, 100) == text  # 41 tokens: nothing to cut
    assert truncate_dialogue(tokenizer, text, 3) == whole_text_truncation(tokenizer, text, 3) == "a b b"


def test_word_count_equals_split_across_chunk_boundaries() -> None:
    # Words of every length straddle the 1 MB chunk boundaries; so do whitespace runs.
    text = "".join(("w" * (i % 13 + 1)) + (" " * (i % 3 + 1)) for i in range(400_000))
    assert len(text) > 2 * (1 << 20)
    assert word_count(text) == len(text.split())
    assert word_count("  a  ") == 1 and word_count("") == 0


def test_inspect_counts_tokens_up_to_a_cap_and_says_so() -> None:
    tokenizer = load_tokenizer("random:tiny-llama")  # one token per byte
    records = [Record("a", "short one", ("s",)), Record("b", "z " * 3_000_000, ("s",))]
    started = time.perf_counter()
    stats = inspect_records(records, tokenizer=tokenizer, max_length=16, token_cap=100)
    assert time.perf_counter() - started < 5.0
    assert stats["dialogue_tokens"]["max"] == 101 and stats["dialogue_tokens"]["p50"] == len("short one")
    assert stats["capped"] == {"tokens": 100, "dialogues": 1, "summaries": 0}
    assert stats["truncated"]["dialogues"]["count"] == 1
    assert stats["dialogue_words"]["max"] == 3_000_000
    normal = inspect_records(records[:1], tokenizer=tokenizer, max_length=16)
    assert "capped" not in normal and normal["dialogue_tokens"]["max"] == len("short one")


def test_a_long_dialogue_in_a_csv_is_data_not_a_csv_error(tmp_path: Path) -> None:
    from dialogtune.data import read_records
    from dialogtune.evaluation import read_scoring_table

    long = "#Person1#: " + "word " * 60_000  # 300 KB: over csv's default 128 KiB field limit
    path = tmp_path / "validation.csv"
    path.write_text(f'id,dialogue,summary,prediction\na,"{long}",s,"{long}"\n', encoding="utf-8")
    assert read_records(path)[0].dialogue == long
    assert read_scoring_table(path).predictions == [long]


@pytest.mark.slow  # reading the tokenizer from the GGUF file takes ~20 s here
def test_a_damaged_model_cache_falls_back_to_the_gguf_file(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from dialogtune.models.loading import _embedded_cache_path, cache_dir
    from dialogtune.models.specs import resolve_spec

    spec = resolve_spec("smollm2-135m-instruct")
    good = load_tokenizer(spec)  # makes sure a cached copy exists to damage
    cached = _embedded_cache_path(spec)
    if not (cached / "tokenizer.json").is_file():
        pytest.skip("no cached conversion of the embedded model")
    monkeypatch.setenv("DIALOGTUNE_CACHE", str(tmp_path))
    copy = _embedded_cache_path(spec)
    assert copy.is_relative_to(cache_dir()) and copy != cached
    shutil.copytree(cached, copy)
    (copy / "tokenizer.json").write_text('{"truncated": ', encoding="utf-8")
    fallback = load_tokenizer(spec)  # from the GGUF file, with a warning instead of an error
    text = "#Person1#: Hello, how are you?"
    assert fallback(text)["input_ids"] == good(text)["input_ids"]
