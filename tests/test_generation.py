"""Batched, length-sorted generation equals one-at-a-time generation (greedy)."""

from __future__ import annotations

import json

import pytest
import torch

from dialogtune.cli import main
from dialogtune.errors import ConfigError
from dialogtune.generation import GenerationSettings, build_prompts, generate
from dialogtune.models import load_model
from dialogtune.prompts import PromptTemplate

DIALOGUES = [
    "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks.",
    "#Person1#: Could you help me carry these boxes upstairs to the office?\n#Person2#: Sure, give me one.",
    "#Person1#: Lunch?\n#Person2#: Yes.",
    "#Person1#: I lost my keys somewhere in the park this morning.\n#Person2#: Let's go and look.\n"
    "#Person1#: Thank you so much.",
    "#Person1#: What time is it?\n#Person2#: Nine.",
]


# Decoder-only models: the ragged engine, exact at every precision (generation/ragged.py).
# Encoder-decoder models: transformers' static batches, exact in fp32.
@pytest.mark.parametrize(
    ("spec", "precision"),
    [("random:tiny-llama", "fp32"), ("random:tiny-llama", "bf16"), ("random:tiny-t5", "fp32")],
)
def test_batched_equals_sequential(spec, precision):
    loaded = load_model(spec, dtype=precision)
    assert loaded.precision == precision

    def run(**changes):
        settings = GenerationSettings(max_new_tokens=16, precision=precision, **changes)
        return generate(loaded, DIALOGUES, settings).texts

    batched, sequential = run(batch_size=4), run(batch_size=1)
    assert batched == sequential == run(batch_size=3, sort_by_length=False) == run(batch_size=16)
    assert len(set(batched)) > 1 and all(batched)  # varied, non-empty: a meaningful comparison


def test_the_engine_is_what_decoder_only_models_use():
    llama, t5 = load_model("random:tiny-llama"), load_model("random:tiny-t5")
    assert generate(llama, DIALOGUES[:1], GenerationSettings(max_new_tokens=4)).engine == "ragged"
    assert (
        generate(llama, DIALOGUES[:1], GenerationSettings(max_new_tokens=4, num_beams=2)).engine == "generate"
    )
    assert generate(t5, DIALOGUES[:1], GenerationSettings(max_new_tokens=4)).engine == "generate"


def test_ragged_engine_matches_transformers_generate_in_fp32(monkeypatch):
    """The engine is a faithful greedy decoder: the same summaries as transformers' generate."""
    import dialogtune.generation.engine as engine

    loaded = load_model("random:tiny-llama", dtype="fp32")
    settings = GenerationSettings(max_new_tokens=16, batch_size=1)
    ours = generate(loaded, DIALOGUES, settings).texts
    monkeypatch.setattr(engine, "supports", lambda model: False)
    theirs = generate(loaded, DIALOGUES, settings)
    assert theirs.engine == "generate" and theirs.texts == ours


@pytest.mark.parametrize("force_static", [False, True])
def test_token_counts_stop_at_the_end_of_sequence(monkeypatch, force_static):
    """Tokens/s counts generated tokens only: a row that ended early adds no padding."""
    import dialogtune.generation.engine as engine

    if force_static:
        monkeypatch.setattr(engine, "supports", lambda model: False)
    loaded = load_model("random:tiny-llama", dtype="fp32")
    settings = GenerationSettings(max_new_tokens=12, batch_size=5)
    free = generate(loaded, DIALOGUES, settings)
    assert free.generated_tokens == 12 * len(DIALOGUES)  # random weights: nobody stops on their own
    # The free run's tokens, one dialogue at a time with transformers' generate (no padding).
    prompts = loaded.kind.encode_prompts(
        loaded.tokenizer, build_prompts(loaded, DIALOGUES, PromptTemplate(), 1024)
    )
    tokens = [
        loaded.model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p) :].tolist()
        for p in prompts
    ]
    # Declare the first dialogue's first token an end-of-sequence token: rows stop where it appears.
    stop = tokens[0][0]
    loaded.model.generation_config.eos_token_id = [loaded.tokenizer.eos_token_id, stop]
    stopped = generate(loaded, DIALOGUES, settings)
    expected = [row.index(stop) + 1 if stop in row else 12 for row in tokens]
    assert stopped.texts[0] == "" and min(expected) == 1 and max(expected) == 12
    assert stopped.generated_tokens == sum(expected) < free.generated_tokens


def test_sampling_is_seeded_per_dialogue_and_does_not_depend_on_the_batch():
    loaded = load_model("random:tiny-llama")
    settings = {"max_new_tokens": 8, "do_sample": True, "seed": 1, "temperature": 0.9, "top_k": 20}
    a = generate(loaded, DIALOGUES, GenerationSettings(batch_size=4, **settings)).texts
    b = generate(loaded, DIALOGUES, GenerationSettings(batch_size=1, **settings)).texts
    c = generate(loaded, DIALOGUES, GenerationSettings(batch_size=4, **{**settings, "seed": 2})).texts
    assert a == b and a != c


def test_beam_search_runs():
    loaded = load_model("random:tiny-llama")
    beams = generate(loaded, DIALOGUES[:2], GenerationSettings(max_new_tokens=8, num_beams=3)).texts
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)


def test_truncation_keeps_instruction():
    loaded = load_model("random:tiny-t5")
    from dialogtune.generation import build_prompts
    from dialogtune.prompts import PromptTemplate

    prompt = build_prompts(loaded, ["x" * 500], PromptTemplate(), max_dialogue_tokens=20)[0]
    assert prompt.startswith("Summarize the following conversation.") and prompt.endswith("Summary: ")
    assert "x" * 20 in prompt and "x" * 21 not in prompt


@pytest.mark.parametrize("field", [{"max_new_tokens": 0}, {"top_p": 1.5}, {"batch_size": 0}])
def test_bad_generation_settings(field):
    with pytest.raises(ConfigError, match=next(iter(field))):
        GenerationSettings(**field)


def _write_data(path):
    rows = [
        {"id": f"d{i}", "dialogue": d, "summary": f"Person1 and Person2 talk {i}."}
        for i, d in enumerate(DIALOGUES)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_generate_and_evaluate_cli(tmp_path, capsys):
    data = tmp_path / "validation.jsonl"
    _write_data(data)
    out = tmp_path / "preds.jsonl"
    assert (
        main(
            [
                "generate",
                "--model",
                "random:tiny-llama",
                "--data",
                str(data),
                "--max-new-tokens",
                "8",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(5)]
    assert all(set(r) >= {"id", "dialogue", "references", "prediction"} for r in rows)
    assert not (tmp_path / "preds.jsonl.partial").exists()
    capsys.readouterr()

    run = tmp_path / "run"
    assert (
        main(
            [
                "evaluate",
                "--model",
                "random:tiny-llama",
                "--data",
                str(tmp_path),
                "--limit",
                "3",
                "--max-new-tokens",
                "8",
                "--output-dir",
                str(run),
                "--json",
                "--n-resamples",
                "200",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics" / "validation.json").read_text())
    assert printed["rouge1"] == metrics["rouge1"]  # --json prints what was written
    assert metrics["n"] == 3 and "RANDOM WEIGHTS" in metrics["warning"]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert metrics[key]["ci_low"] <= metrics[key]["mean"] <= metrics[key]["ci_high"]
    assert metrics["settings"]["use_stemmer"] is True
    assert {p.name for p in run.iterdir()} == {
        ".dialogtune-output.json",
        "config.yaml",
        "metadata.json",
        "predictions",
        "metrics",
    }
    preds = [json.loads(line) for line in (run / "predictions" / "validation.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and "rouge1" in preds[0]["scores"]


def test_generate_resumes_from_partial(tmp_path, monkeypatch, capsys):
    """An interrupted run leaves a .partial file; the rerun reuses what is in it."""
    data = tmp_path / "validation.jsonl"
    _write_data(data)
    out = tmp_path / "preds.jsonl"
    args = [
        "generate",
        "--model",
        "random:tiny-llama",
        "--data",
        str(data),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--output",
        str(out),
    ]
    import dialogtune.generation.run as generation
    import dialogtune.predict as predict

    calls = {"n": 0}
    original = generation.tqdm.update

    def crash_after_four_rows(self, n=1):  # rows are saved as they finish, before the bar moves
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, n)

    monkeypatch.setattr(generation.tqdm, "update", crash_after_four_rows)
    assert main(args) == 130
    partial = tmp_path / "preds.jsonl.partial"
    assert partial.exists() and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 4  # key line + the four finished rows
    written = [json.loads(line) for line in partial.read_text().splitlines()[1:]]
    monkeypatch.setattr(generation.tqdm, "update", original)
    asked: list[int] = []
    real_generate = predict.generate

    def counting_generate(loaded, dialogues, *a, **k):
        asked.append(len(dialogues))
        return real_generate(loaded, dialogues, *a, **k)

    monkeypatch.setattr(predict, "generate", counting_generate)
    assert main(args) == 0
    assert asked == [1]  # only the one unfinished dialogue was generated again
    assert "4 resumed" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and not partial.exists()
    by_id = {r["id"]: r["prediction"] for r in rows}
    assert all(by_id[w["id"]] == w["prediction"] for w in written)  # finished rows kept as they were
    fresh = tmp_path / "fresh.jsonl"
    assert main([*args[:-1], str(fresh), "--no-resume"]) == 0
    assert [json.loads(x)["prediction"] for x in fresh.read_text().splitlines()] == [
        r["prediction"] for r in rows
    ]
