"""Parameter counts, like the notebook's ``print_number_of_trainable_model_parameters``."""

from __future__ import annotations

from typing import Any

import torch


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """Total and trainable parameters; shared (tied) tensors are counted once."""
    total = trainable = 0
    for param in model.parameters():  # .parameters() already skips duplicates of tied tensors
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return {
        "total": total,
        "trainable": trainable,
        "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0,
    }


def format_parameters(counts: dict[str, Any]) -> str:
    return (
        f"trainable model parameters: {counts['trainable']:,}\n"
        f"all model parameters: {counts['total']:,}\n"
        f"percentage of trainable model parameters: {counts['trainable_percent']:.2f}%"
    )
