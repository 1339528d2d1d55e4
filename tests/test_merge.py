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
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert not list(tmp_path.glob(".merged*"))  # built under a temporary name, renamed into place

    unmerged = load_model(config.model, adapter=str(adapter))
    merged = load_model(str(output))
    # A plain transformers model: no PEFT wrapper, no LoRA tensors left.
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert type(merged.model) is type(unmerged.model.get_base_model())
    settings = GenerationSettings(max_new_tokens=16, max_dialogue_tokens=96)
    assert generate(merged, DIALOGUES, settings).texts == generate(unmerged, DIALOGUES, settings).texts
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
        (["--model", config.model, "--adapter", adapter, "--output", adapter], "--output must differ"),
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
