"""``dialogtune merge``: base + LoRA adapter folded into one model that generates the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import DIALOGUES, files_under, tiny_overrides

from dialogtune.cli import main
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.loading import load_model
from dialogtune.training import load_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-llama"])
def test_merged_model_generates_what_base_plus_adapter_generates(tmp_path: Path, model: str, capsys) -> None:
    config = load_config(None, tiny_overrides(tmp_path, model, "lora", "training.max_steps=4"))
    adapter = train(config, progress=False).run_dir / "adapter"
    output = tmp_path / "merged"

    assert main(["merge", "--model", config.model, "--adapter", str(adapter), "--output", str(output)]) == 0
    assert "merged" in capsys.readouterr().out
    assert files_under(output) == {
        ".dialogtune-output.json",  # marks it as a merge output that --overwrite may replace
        "config.json",
        "dialogtune_inference.json",  # the adapter's inference contract travels with the merge
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert not list(tmp_path.glob(".merged*"))  # built under a temporary name, renamed into place

    unmerged = load_model(config.model, adapter=str(adapter), dtype="fp32")
    merged = load_model(str(output), dtype="fp32")
    # A plain transformers model: no PEFT wrapper, no LoRA tensors left.
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert type(merged.model) is type(unmerged.model.get_base_model())
    settings = GenerationSettings(max_new_tokens=16, max_dialogue_tokens=96)
    assert generate(merged, DIALOGUES, settings).texts == generate(unmerged, DIALOGUES, settings).texts
    # ... and the adapter really changed the model, so the equality above says something.
    base = load_model(config.model, dtype="fp32")
    inputs = base.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    if base.kind.name == "seq2seq":
        inputs["decoder_input_ids"] = torch.zeros((2, 4), dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(base.model(**inputs).logits, merged.model(**inputs).logits, atol=1e-4)
    batch = merged.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    if merged.kind.name == "seq2seq":
        batch["decoder_input_ids"] = torch.zeros((2, 4), dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(
            merged.model(**batch).logits, unmerged.model(**batch).logits, rtol=1e-5, atol=1e-5
        )


def test_merge_errors_are_one_line(tmp_path: Path, capsys) -> None:
    config = load_config(None, tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=1"))
    adapter = str(train(config, progress=False).run_dir / "adapter")
    capsys.readouterr()
    cases = [
        (["--model", config.model, "--adapter", adapter, "--output", adapter], "must not be the adapter"),
        (
            ["--model", "random:tiny-t5", "--adapter", adapter, "--output", str(tmp_path / "m")],
            "does not match",
        ),
        (
            ["--model", config.model, "--adapter", str(tmp_path / "nope"), "--output", str(tmp_path / "m")],
            "adapter directory not found",
        ),
    ]
    for args, message in cases:
        assert main(["merge", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_merge_never_replaces_what_it_did_not_write(tmp_path: Path, capsys) -> None:
    """An existing folder is replaced only when it is an earlier merge output and --overwrite is given."""
    config = load_config(None, tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=1"))
    adapter = str(train(config, progress=False).run_dir / "adapter")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    base = ["merge", "--model", config.model, "--adapter", adapter, "--output"]
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main([*base, str(mine), *extra]) == 2
        assert "did not write" in capsys.readouterr().err
        assert (mine / "notes.txt").read_text() == "the user's own file"
    merged = tmp_path / "merged"
    assert main([*base, str(merged)]) == 0
    first = (merged / "model.safetensors").stat().st_mtime_ns
    assert main([*base, str(merged)]) == 2  # an earlier merge: only with --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (merged / "model.safetensors").stat().st_mtime_ns == first
    assert main([*base, str(merged), "--overwrite"]) == 0
    assert (merged / "model.safetensors").stat().st_mtime_ns != first
