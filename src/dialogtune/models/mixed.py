"""bf16 inference with an fp32 residual stream: the matrix products in bf16, all else in fp32.

Casting a whole model to bf16 (``model.to(torch.bfloat16)``) rounds the weights *and* every
activation to 8 significant bits. The worst of it is the residual stream, the running sum that
each of the model's layers adds its output to: rounded after every addition, it drifts, and a
zero-shot model whose next tokens are often nearly tied then writes other summaries. Measured on
SmolLM2-135M-Instruct, zero-shot, all 500 validation dialogues, against fp32: everything in bf16
gave 78 identical summaries and ROUGE-1 −0.71 (p 0.014, significant); with the output layer's top
logits recomputed in fp32 (:mod:`dialogtune.models.logits`) 162 and −0.53 (p 0.016); with the
products alone in bf16, as here, 266 and −0.16 (p 0.38, no significant difference).
docs/generation.md#quality-guard has the table.

Each ``nn.Linear`` of the transformer becomes a :class:`LowPrecisionLinear` holding its weight in
bf16: its input is cast down, the product (accumulated in fp32 inside the kernel) cast back up.
Embeddings, norms, rotary embeddings, attention scores and softmax, activations and the residual
additions stay fp32. The output layer gets its own bf16 copy (a tied input embedding keeps the
fp32 original) inside :class:`~dialogtune.models.logits.RefinedLogits`. Every bf16 weight is laid
out once for the CPU's matrix kernel (:mod:`dialogtune.models.packed`: same bits, no reorder per
call). For SmolLM2-135M that is
382 MB of weights against 270 MB all-bf16 and 538 MB fp32; the products, where the time goes,
run at bf16 speed.

For a model whose weights will not change any more (inference: zero-shot, a merged adapter, an
adapter attached at load). A server that attaches adapters at run time needs plain
``nn.Linear`` layers for PEFT to find, so it casts the whole model instead and refines only the
top logits (:func:`dialogtune.models.inference.load_for_adapters`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dialogtune.models.loaded import innermost
from dialogtune.models.logits import RefinedLogits, output_layer
from dialogtune.models.packed import pack


class LowPrecisionLinear(nn.Module):
    """A linear layer computing in its weight's format and answering in its input's."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = pack(linear.to(dtype))  # the weight laid out once for the CPU kernel

    @property
    def weight(self) -> torch.Tensor:  # read by some models (T5 casts its input to wo.weight's dtype)
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.inner.bias

    @property
    def in_features(self) -> int:
        return self.inner.in_features

    @property
    def out_features(self) -> int:
        return self.inner.out_features

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.inner(x.to(self.inner.weight.dtype)).to(x.dtype)


def mix_precision(model: nn.Module, dtype: torch.dtype) -> int:
    """Turn fp32 ``model`` into bf16 (or fp16) products over an fp32 residual stream, in place.

    Returns how many linear layers now compute in ``dtype``. LoRA's own small matrices
    (``lora_A``/``lora_B`` of an adapter left unmerged) stay as they are; the layer under them
    is converted like any other.
    """
    base = innermost(model)
    head = output_layer(base)
    converted = 0
    for name, module in list(base.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}"
            if type(child) is nn.Linear and child is not head and "lora_" not in path:
                setattr(module, child_name, LowPrecisionLinear(child, dtype))
                converted += 1
    if type(head) is nn.Linear:
        low = nn.Linear(
            head.in_features,
            head.out_features,
            bias=head.bias is not None,
            device=head.weight.device,
            dtype=dtype,
        )
        with torch.no_grad():
            low.weight.copy_(head.weight)
            if head.bias is not None:
                low.bias.copy_(head.bias)
        low.requires_grad_(False)
        inputs = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
        if inputs is not None and inputs.weight is head.weight:
            # Tied: the fp32 original stays as the input embedding, so the bf16 copy is a cache of
            # it, not another parameter (parameter counts in reports stay the model's own).
            weight = low.weight.detach()
            del low.weight
            low.register_buffer("weight", weight, persistent=False)
        base.set_output_embeddings(RefinedLogits(pack(low)))
    _own_kept_tensors(base, dtype)
    return converted


def _own_kept_tensors(model: nn.Module, dtype: torch.dtype) -> None:
    """Copy the tensors left in fp32 (embeddings, norms) into memory of their own.

    Weights loaded from safetensors are views of the memory-mapped file, and one view keeps the
    whole mapping: the fp32 embeddings alone kept SmolLM2-135M's 538 MB file resident after its
    linear weights had been converted (RSS 798 MB instead of 393 MB, measured). The copies let it
    go; ties between parameters are kept (a shared parameter is one object)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dtype != dtype:
                parameter.data = parameter.data.clone()
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype != dtype:
                    module._buffers[name] = buffer.clone()


def product_dtype(model: nn.Module) -> torch.dtype | None:
    """The format ``model``'s products run in under :func:`mix_precision`; None if not mixed."""
    layer = next((m for m in innermost(model).modules() if isinstance(m, LowPrecisionLinear)), None)
    return None if layer is None else layer.weight.dtype


def is_mixed(model: nn.Module) -> bool:
    return product_dtype(model) is not None
