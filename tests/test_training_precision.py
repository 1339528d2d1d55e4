"""bf16 storage of LoRA's frozen weights: the same numbers as autocast over fp32, less memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import DIALOGUES, tiny_model, tiny_overrides, write_dialogues

from dialogtune.errors import ConfigError
from dialogtune.methods.lora import METHOD as LORA
from dialogtune.methods.lora import LoraSettings
from dialogtune.models.loading import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.training import load_config, train
from dialogtune.training.collator import make_collator
from dialogtune.training.dataset import encode_records
from dialogtune.training.precision import (
    freeze_linears_in_bf16,
    resolve_frozen_weights,
    unfreeze_linears_to_fp32,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_is_bf16_only_for_lora_in_bf16_without_sharding() -> None:
    assert resolve_frozen_weights("auto", method="lora", precision="bf16", sharded=False) == "bf16"
    assert resolve_frozen_weights("auto", method="lora", precision="fp32", sharded=False) == "fp32"
    assert resolve_frozen_weights("auto", method="full", precision="bf16", sharded=False) == "fp32"
    assert resolve_frozen_weights("auto", method="lora", precision="bf16", sharded=True) == "fp32"
    assert resolve_frozen_weights("fp32", method="lora", precision="bf16", sharded=False) == "fp32"
    for kwargs, message in [
        (dict(method="full", precision="bf16", sharded=False), "is for methods that freeze the base"),
        (dict(method="lora", precision="fp32", sharded=False), "needs bf16 training"),
        (dict(method="lora", precision="bf16", sharded=True), "FSDP/DeepSpeed"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_frozen_weights("bf16", **kwargs)
    with pytest.raises(ConfigError, match="training.frozen_weights"):
        load_config(None, ["training.frozen_weights=fp16"])


def _loss_and_lora_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout masks (T5 has dropout 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_bf16_frozen_weights_give_bit_identical_loss_and_gradients(tmp_path: Path, name: str) -> None:
    from dialogtune.data import DataConfig, load_records

    loaded = load_model(tiny_model(tmp_path, name), dtype="fp32")
    torch.manual_seed(0)
    loaded.model = LORA.apply(loaded.model, LoraSettings(r=4, alpha=8, dropout=0.0))
    for n, p in loaded.model.named_parameters():  # non-zero B, so the adapters shape the output
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    records = load_records(DataConfig(source=str(write_dialogues(tmp_path / "data")), split="train", limit=4))
    batch = make_collator(loaded.tokenizer)(
        encode_records(loaded, records, PromptTemplate(), max_dialogue_tokens=96, max_target_tokens=32)
    )
    loaded.model.train()
    before = _loss_and_lora_grads(loaded.model, batch)
    frozen_fp32 = sum(p.numel() for p in loaded.model.parameters() if not p.requires_grad)

    cast = freeze_linears_in_bf16(loaded.model)
    after = _loss_and_lora_grads(loaded.model, batch)
    assert cast > 0 and torch.equal(before[0], after[0])
    assert before[1].keys() == after[1].keys() and all(
        torch.equal(before[1][k], after[1][k]) for k in before[1]
    )
    # Trainable adapters, embeddings and a tied lm_head stay fp32.
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters() if p.requires_grad)
    assert loaded.model.get_input_embeddings().weight.dtype == torch.float32
    bf16 = sum(p.numel() for p in loaded.model.parameters() if p.dtype == torch.bfloat16)
    assert 0 < bf16 < frozen_fp32
    assert unfreeze_linears_to_fp32(loaded.model) == cast
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_lora_training_in_bf16_stores_frozen_weights_in_bf16_with_the_same_loss_curve(tmp_path: Path) -> None:
    runs = {}
    for frozen in ("fp32", "bf16"):
        overrides = tiny_overrides(
            tmp_path / frozen,
            "tiny-llama",
            "lora",
            "training.precision=bf16",
            f"training.frozen_weights={frozen}",
            "training.max_steps=4",
            "eval.strategy=steps",
            "eval.steps=4",
            "eval.rouge_dialogues=2",
            "eval.generation.max_new_tokens=6",
        )
        runs[frozen] = train(load_config(None, overrides), progress=False)
    histories = {k: json.loads((r.run_dir / "logs" / "history.json").read_text()) for k, r in runs.items()}
    curves = {
        k: [
            (row.get("loss"), row.get("eval_loss"), row.get("eval_rouge1"))
            for row in h
            if "loss" in row or "eval_loss" in row
        ]
        for k, h in histories.items()
    }
    assert len(curves["bf16"]) >= 5 and curves["bf16"] == curves["fp32"]
    assert (
        runs["bf16"].metadata["frozen_weights"] == "bf16"
        and runs["fp32"].metadata["frozen_weights"] == "fp32"
    )
    # The returned model runs without autocast again (fp32 throughout).
    model = runs["bf16"].loaded.model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    batch = runs["bf16"].loaded.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
