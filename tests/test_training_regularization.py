"""Label smoothing and NEFTune: config keys that reach transformers' Trainer, shape training, and
leave the eval loss the plain cross-entropy (so runs with different settings compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import tiny_overrides
from transformers.trainer_pt_utils import LabelSmoother

from dialogtune.errors import ConfigError
from dialogtune.models.kinds import IGNORE_INDEX
from dialogtune.models.loading import load_model
from dialogtune.training import load_config, train
from dialogtune.training.loss import selective_causal_loss
from dialogtune.training.recipe import training_arguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_keys_validate_and_reach_training_arguments(tmp_path: Path) -> None:
    config = load_config(None, ["training.label_smoothing=0.1", "training.neftune_noise_alpha=5"])
    args = training_arguments(config, "fp32", progress=False)
    assert (args.label_smoothing_factor, args.neftune_noise_alpha) == (0.1, 5.0)
    plain = training_arguments(load_config(None), "fp32", progress=False)
    assert (plain.label_smoothing_factor, plain.neftune_noise_alpha) == (0.0, None)
    for bad in (
        "training.label_smoothing=1.0",
        "training.label_smoothing=-0.1",
        "training.neftune_noise_alpha=0",
    ):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


def test_selective_loss_smooths_like_transformers_label_smoother() -> None:
    loaded = load_model("random:tiny-llama", dtype="fp32", device="cpu")
    torch.manual_seed(0)
    input_ids = torch.randint(3, 200, (2, 12))
    labels = input_ids.clone()
    labels[:, :7] = IGNORE_INDEX  # the prompt: not learned
    labels[1, 7] = IGNORE_INDEX
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    with torch.no_grad():
        ours = selective_causal_loss(loaded.model, inputs, label_smoothing=0.1)
        logits = loaded.model(input_ids=input_ids, attention_mask=inputs["attention_mask"])
        theirs = LabelSmoother(epsilon=0.1)(logits, labels, shift_labels=True)
        plain = selective_causal_loss(loaded.model, inputs)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    assert float(ours) > float(plain)


def _first_losses(tmp_path: Path, name: str, *extra: str) -> tuple[float, float]:
    """(eval loss before training, training loss of step 1) of a 1-step tiny run."""
    overrides = tiny_overrides(
        tmp_path / name,
        "tiny-llama",
        "lora",
        "training.max_steps=1",
        "eval.strategy=steps",
        "eval.steps=1",
        "eval.on_start=true",
        "eval.load_best=false",
        *extra,
    )
    result = train(load_config(None, overrides), progress=False)
    history = json.loads((result.run_dir / "logs" / "history.json").read_text())
    first_eval = next(row["eval_loss"] for row in history if "eval_loss" in row and row["step"] == 0)
    first_loss = next(row["loss"] for row in history if "loss" in row and row["step"] == 1)
    return first_eval, first_loss


def test_smoothing_and_noise_change_training_not_the_eval_loss(tmp_path: Path) -> None:
    base_eval, base_loss = _first_losses(tmp_path, "plain")
    runs = {
        "smoothing": _first_losses(tmp_path, "smoothing", "training.label_smoothing=0.2"),
        "neftune": _first_losses(tmp_path, "neftune", "training.neftune_noise_alpha=15"),
        # transformers' own loss path (no selective loss): its label smoother, off in evaluation
        "smoothing-model-loss": _first_losses(
            tmp_path, "model-loss", "training.label_smoothing=0.2", "training.selective_loss=false"
        ),
    }
    for name, (first_eval, first_loss) in runs.items():
        assert first_eval == pytest.approx(base_eval, rel=1e-5), name  # same weights, plain CE
        assert abs(first_loss - base_loss) > 1e-3, name  # the step itself was trained differently
