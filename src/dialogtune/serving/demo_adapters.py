"""Random LoRA adapters, for tests, benchmarks and trying the server without training.

A fresh LoRA adapter changes nothing (PEFT initialises B to zero, so BA = 0); these
get random non-zero B matrices, so every adapter gives its own outputs. They are saved
exactly like trained ones (PEFT folder + ``dialogtune_base.json``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dialogtune.methods.lora import METHOD as LORA
from dialogtune.methods.lora import LoraSettings
from dialogtune.models.adapters import write_base_info
from dialogtune.models.loading import load_model


def make_random_adapter(
    model: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    r: int = 4,
    alpha: int | None = None,
    target_modules: list[str] | str | None = None,
    scale: float = 0.5,
) -> Path:
    """Save a LoRA adapter for base ``model`` with B ~ N(0, scale²) to ``out_dir``.

    ``scale`` sets how far the adapter moves the outputs: 0.5 scrambles a tiny random
    model's outputs; ~0.02 perturbs a real 135M model while keeping it fluent.
    """
    loaded = load_model(model)
    settings = LoraSettings(r=r, alpha=alpha or r, dropout=0.0, target_modules=target_modules)
    peft_model = LORA.apply(loaded.model, settings)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))  # safetensors by default
    loaded.model = peft_model
    write_base_info(out, loaded)
    return out
