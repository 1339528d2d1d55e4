"""A decode step whose rows all use one adapter, without PEFT's per-row machinery.

A server holding several LoRA adapters names each row's adapter (PEFT's ``adapter_names``):
PEFT then registers a hook on every LoRA layer for the call, and each layer gathers the rows of
every adapter in the batch, runs its small matrices on them and scatters the result back.
Measured on SmolLM2-135M (210 adapted layers, one thread), a lone request with an adapter took
2.1x as long as one without: the per-layer Python and indexing, not the arithmetic, at one or two
rows. When every row of a step uses the same adapter (a lone request, or a server used through
one adapter), :class:`UniformRowsLinear` computes the same thing directly: the base product,
then the adapter's ``B(A(x)) * scaling`` added in the result's format — the very operations of
PEFT's per-row path with the gather and scatter left out, so the bits are the same (tested
against it), and an answer still does not depend on what else is in the batch.

:func:`install` turns PEFT's LoRA ``Linear`` layers into this subclass in place (the same
objects, parameters and adapters); outside :func:`one_adapter` it behaves exactly as PEFT's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in adapter_names

# The adapter every row of the current forward pass uses (None: PEFT's own behaviour). A
# context variable: each thread (a server's model thread) sees its own.
_UNIFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dialogtune_uniform_adapter", default=None
)


class UniformRowsLinear(LoraLinear):
    """PEFT's LoRA ``Linear`` with a direct path for a batch whose rows share one adapter."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = _UNIFORM.get()
        if name is None or self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        # PEFT 0.21 can leave its adapter_names hooks behind after a forward pass that raised;
        # under one_adapter() the rows' adapter is known, so a stale name is ignored.
        kwargs.pop("adapter_names", None)
        if name in self.lora_variant:  # DoRA and other variants: PEFT's per-row code, as before
            return self._mixed_batch_forward(x, *args, adapter_names=[name] * x.shape[0], **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if name == BASE_ROW or name not in self.lora_A:
            return result
        lora_a = self.lora_A[name]
        # PEFT's per-row path, rows gathered in order (a copy of x) and scattered back (an add).
        rows = x.contiguous().to(lora_a.weight.dtype)
        delta = self.lora_B[name](lora_a(self.lora_dropout[name](rows))) * self.scaling[name]
        return result.add_(delta.to(result.dtype))


def install(model: torch.nn.Module) -> bool:
    """Give every LoRA linear layer of ``model`` the direct path; True when every adapter layer
    of the model has it (else :func:`one_adapter` must not be used: another layer type would
    ignore it and compute with PEFT's active adapter)."""
    complete = True
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = UniformRowsLinear
        elif isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)) and not isinstance(
            module, UniformRowsLinear
        ):
            # Another adapter layer (LoRA on embeddings, IA3, ...) or a wrapper that reads per-row
            # names too (modules_to_save, trainable tokens): it would ignore one_adapter().
            complete = False
    return complete


@contextmanager
def one_adapter(name: str) -> Iterator[None]:
    """Forward passes inside use adapter ``name`` (or ``BASE_ROW``) for every row."""
    token = _UNIFORM.set(name)
    try:
        yield
    finally:
        _UNIFORM.reset(token)
