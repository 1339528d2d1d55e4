"""Training on a CUDA GPU (opt-in: ``pytest -m gpu``; skipped without one).

The CPU tests cover the logic; these check what only a GPU exercises: device placement
through the Trainer, bf16 autocast picked by ``precision: auto`` on CUDA (T5 included),
regional compilation with CUDA kernels, and that weights trained on the GPU reload on the
CPU with the same greedy generations. Plus FLAN-T5-base's real shapes (random weights) with
the notebook's LoRA, where the GPU's allocator gives an exact peak-memory figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import DIALOGUES, compiled_and_eager_curves, logged_losses, tiny_overrides

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.loading import load_model
from dialogtune.training import load_config, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(("model", "method"), [("tiny-llama", "lora"), ("tiny-t5", "full")])
def test_gpu_training_in_bf16_reloads_on_cpu(tmp_path: Path, model: str, method: str) -> None:
    config = load_config(
        None,
        tiny_overrides(
            tmp_path, model, method, "device=cuda", "training.precision=auto", "training.max_steps=12"
        ),
    )
    result = train(config, progress=False)
    meta = json.loads((result.run_dir / "metadata.json").read_text())
    assert meta["precision"] == "bf16"  # auto on a bf16 GPU, T5 too
    assert next(result.loaded.model.parameters()).device.type == "cuda"
    losses = logged_losses(result.run_dir)
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0], losses

    settings = GenerationSettings(max_new_tokens=12, max_dialogue_tokens=96)
    result.loaded.model.to("cpu").float()
    trained = generate(result.loaded, DIALOGUES, settings, config.prompt).texts
    if method == "lora":
        reloaded = load_model(config.model, adapter=str(result.run_dir / "adapter"), device="cpu")
    else:
        reloaded = load_model(str(result.run_dir / "model"), device="cpu")
    assert generate(reloaded, DIALOGUES, settings, config.prompt).texts == trained


def test_gpu_compiled_training_tracks_eager(tmp_path: Path) -> None:
    curves = compiled_and_eager_curves(
        tmp_path, "device=cuda", "training.precision=bf16", "training.max_steps=4"
    )
    assert curves["true"] == pytest.approx(curves["false"], rel=2e-2)


def test_notebook_lora_on_flan_t5_base_shapes_uses_under_0_6x_the_memory_of_full(tmp_path: Path) -> None:
    """Peak GPU memory of a few bf16 steps on FLAN-T5-base's architecture (random weights:
    the figures are about memory, not quality) with the notebook's LoRA (r=32, q/v). The
    dialogues are short, so weights, gradients and optimizer state dominate, as they do for
    FLAN-T5-base on a GPU with the notebook's batch."""
    peaks = {}
    for method in ("full", "lora"):
        config = load_config(
            None,
            tiny_overrides(
                tmp_path / method,
                "tiny-llama",
                method,
                "model=random:flan-t5-base",
                "device=cuda",
                "training.precision=bf16",
                "training.max_steps=3",
                "training.learning_rate=1e-4",
                "data.max_dialogue_tokens=512",
                "lora.r=32",
                "lora.alpha=32",
            ),
        )
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        train(config, progress=False)
        peaks[method] = torch.cuda.max_memory_allocated()
        assert all(loss == loss for loss in logged_losses(Path(config.output_dir)))  # no NaN in bf16
    print(f"peak GPU memory (MiB): { {k: round(v / 2**20) for k, v in peaks.items()} }")
    assert peaks["lora"] <= 0.6 * peaks["full"], peaks
