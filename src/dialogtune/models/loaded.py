"""A loaded model with what everyone needs to know about it, and the one unwrap helper.

Its own module so that :mod:`~dialogtune.models.loading` (which makes one) and
:mod:`~dialogtune.models.adapters` (which attaches adapters to one) import it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dialogtune.models.kinds import ModelKind
from dialogtune.models.specs import ModelSpec


def innermost(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside any wrappers: DDP/FSDP (``.module``), torch.compile
    (``._orig_mod``) and PEFT (``get_base_model()``, which also unwraps LoRA's tuner layer)."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            break
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass
class LoadedModel:
    """A model ready for generation or training, with what everyone needs to know about it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: ModelKind
    spec: ModelSpec
    adapter: str | None = None
    seed: int = 0  # the initialisation seed of random: specs (part of their identity)
    adapter_merged: bool = False  # the adapter folded into a private copy of the base weights

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision(self) -> str:
        """The number format the matrix products compute in: fp32, bf16 or fp16 (under an fp32
        residual stream, dialogtune.models.mixed, the products' format, not the weights' first)."""
        from dialogtune.models.mixed import product_dtype
        from dialogtune.models.precision import DTYPES

        dtype = product_dtype(self.model) or self.model.dtype
        return next((name for name, known in DTYPES.items() if known == dtype), str(dtype))

    @property
    def random_init(self) -> bool:
        return self.spec.is_random

    @property
    def base(self) -> PreTrainedModel:
        """The transformers model under any adapter wrapper."""
        return innermost(self.model)

    def describe(self) -> dict[str, Any]:
        from dialogtune.models.logits import TOP_K, logits_refined
        from dialogtune.models.mixed import is_mixed

        precision = self.precision  # a walk over the modules: once
        return {
            "model": self.spec.raw,
            "source": self.spec.source,
            "random_weights": self.spec.is_random,
            "kind": self.kind.name,
            "model_type": self.model.config.model_type,
            "adapter": self.adapter,
            "adapter_merged": self.adapter_merged,
            "precision": precision,
            # bf16 products over an fp32 residual stream (dialogtune.models.mixed), or all bf16
            "residual_stream": "fp32" if is_mixed(self.model) else precision,
            # bf16 logits with the top candidates recomputed in fp32 (dialogtune.models.logits)
            "logits": f"fp32 for the top {TOP_K}" if logits_refined(self.model) else precision,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.device),
        }
