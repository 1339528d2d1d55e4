"""``inspect_records`` statistics and the ``dialogtune data inspect`` verb."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

import dialogtune.models
from dialogtune.cli import main
from dialogtune.data import Record, inspect_records
from dialogtune.data.inspect import length_stats, percentile


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word, plus an EOS: counts are easy to do by hand."""
    vocab = {"[UNK]": 0, "[PAD]": 1, "</s>": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )


RECORDS = [
    Record("a", "one two three", ("s one", "s two words")),
    Record("b", "w " * 9, ("x",)),
    Record("c", "a b", ()),
]


def test_percentile_by_hand() -> None:
    assert [percentile([1, 2, 3, 4], p) for p in (50, 90, 99)] == [2, 4, 4]
    assert percentile([], 50) == 0
    assert length_stats([3, 1, 2]) == {"p50": 2, "p90": 3, "p95": 3, "p99": 3, "max": 3, "mean": 2.0}


def test_inspect_counts_and_words() -> None:
    stats = inspect_records(RECORDS)
    assert stats["records"] == 3
    assert stats["references"] == {"total": 3, "min_per_record": 0, "max_per_record": 2, "records_without": 1}
    assert stats["dialogue_words"]["max"] == 9 and stats["dialogue_words"]["p50"] == 3
    assert stats["summary_words"]["max"] == 3 and stats["summary_words"]["p50"] == 2
    assert "dialogue_tokens" not in stats and "truncated" not in stats


def test_inspect_tokens_and_truncation() -> None:
    stats = inspect_records(
        RECORDS, tokenizer=word_tokenizer(), max_length=4, prompt_fn=lambda d: f"Sum up: {d}"
    )
    # words + 1 EOS: a=4, b=10, c=3 -> only b exceeds 4 tokens
    assert stats["dialogue_tokens"]["max"] == 10 and stats["dialogue_tokens"]["p50"] == 4
    assert stats["truncated"]["dialogues"] == {"count": 1, "share": round(1 / 3, 4)}
    # the prompt adds 2 words: 6, 12, 5 -> all three exceed 4
    assert stats["prompt_tokens"]["max"] == 12
    assert stats["truncated"]["prompts"] == {"count": 3, "share": 1.0}
    assert stats["summary_tokens"]["max"] == 4
    json.dumps(stats)  # JSON-ready


def test_inspect_empty() -> None:
    stats = inspect_records([], tokenizer=word_tokenizer())
    assert stats["records"] == 0 and stats["dialogue_tokens"]["max"] == 0
    assert stats["truncated"]["dialogues"] == {"count": 0, "share": 0.0}


def write_split(tmp_path: Path) -> Path:
    rows = [
        {"id": "test_0_1", "dialogue": "#Person1#: hi there", "summary": "they greet"},
        {"id": "test_0_2", "dialogue": "#Person1#: hi there", "summary": "a greeting"},
        {"id": "test_1_1", "dialogue": "#Person1#: bye now friend", "summary": "farewell"},
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_inspect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_split(tmp_path)
    assert main(["data", "inspect", "--data", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 2 and stats["source"] == str(path)
    assert stats["references"] == {"total": 3, "min_per_record": 1, "max_per_record": 2, "records_without": 0}
    assert stats["dialogue_words"]["max"] == 4


def test_cli_inspect_text_with_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    requested = []

    def fake_load_tokenizer(spec: str) -> PreTrainedTokenizerFast:
        requested.append(spec)
        return word_tokenizer()

    # The verb imports load_tokenizer from dialogtune.models when it runs: a rename fails here.
    monkeypatch.setattr(dialogtune.models, "load_tokenizer", fake_load_tokenizer)
    path = write_split(tmp_path)
    assert main(["data", "inspect", "--data", str(path), "--model", "tiny", "--max-length", "4"]) == 0
    out = capsys.readouterr().out
    assert requested == ["tiny"]
    assert "records:     2" in out
    assert "truncated dialogues (> 4 tokens): 1 of 2 (50.0%)" in out
    assert "truncated prompts (> 4 tokens): 2 of 2 (100.0%)" in out


def test_cli_data_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data"])
    assert info.value.code == 2
    assert "inspect" in capsys.readouterr().err
