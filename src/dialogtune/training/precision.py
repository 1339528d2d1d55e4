"""Training precision: which autocast, and how LoRA's frozen weights are stored.

Mixed precision here is bf16 *autocast* over fp32 master weights (transformers' ``bf16=True``).
Under autocast every ``nn.Linear`` rounds its fp32 weight to bf16 for the matmul. For LoRA
the base weights never change, so rounding them once, up front, gives bit-identical matmuls
and saves three things per step: the casts themselves, the bf16 copies autograd keeps for
the backward pass, and half of the frozen weights' own memory (SmolLM2-135M: 214 MB of
fp32 Linear weights become 107 MB). Embeddings, norms and the adapters stay fp32, so the
residual stream and the trained parameters keep full precision; a Linear whose weight is
shared with the input embeddings (a tied lm_head) stays fp32 too.
"""

from __future__ import annotations

import torch

from dialogtune.errors import ConfigError
from dialogtune.models.precision import resolve_precision as resolve


def resolve_precision(setting: str, model_type: str, use_cuda: bool) -> str:
    """fp32, bf16 (autocast over fp32 weights) or fp16 for training: the same rule as inference
    (:func:`dialogtune.models.precision.resolve_precision`)."""
    try:
        return resolve(setting, device="cuda" if use_cuda else "cpu", model_type=model_type)
    except ConfigError as exc:
        raise ConfigError(f"training.precision: {exc}") from None


def resolve_frozen_weights(setting: str, *, method: str, precision: str, sharded: bool) -> str:
    """The storage dtype of LoRA's frozen Linear weights: ``fp32`` or ``bf16``.

    ``auto`` is bf16 for LoRA trained in bf16 without FSDP/DeepSpeed (which flatten
    parameters into buffers of one dtype), fp32 otherwise.
    """
    if setting == "auto":
        return "bf16" if method == "lora" and precision == "bf16" and not sharded else "fp32"
    if setting == "bf16":
        if method != "lora":
            raise ConfigError("training.frozen_weights=bf16 is for LoRA (full fine-tuning freezes nothing)")
        if precision != "bf16":
            raise ConfigError(
                f"training.frozen_weights=bf16 needs bf16 training, but precision is {precision}"
            )
        if sharded:
            raise ConfigError("training.frozen_weights=bf16 does not combine with FSDP/DeepSpeed; use fp32")
    return setting


def store_frozen_weights(
    model: torch.nn.Module, setting: str, *, method: str, precision: str, sharded: bool
) -> str:
    """Resolve ``training.frozen_weights`` and apply it to ``model``; returns ``fp32`` or ``bf16``."""
    frozen = resolve_frozen_weights(setting, method=method, precision=precision, sharded=sharded)
    if frozen == "bf16":
        freeze_linears_in_bf16(model)  # identical matmuls under autocast, less memory
    return frozen


def freeze_linears_in_bf16(model: torch.nn.Module) -> int:
    """Store every frozen ``nn.Linear`` weight of ``model`` in bf16; returns how many.

    Only for training under bf16 autocast (outside it, bf16 weights meet fp32 inputs).
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embeddings.weight if embeddings is not None else None
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(module, torch.nn.Linear)
            and weight is not None
            and not weight.requires_grad
            and weight.dtype == torch.float32
            and weight is not tied
        ):
            module.weight = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
            count += 1
    # Weights loaded from safetensors are views of one file mapping, which stays mapped (and in
    # the RSS) while any of them lives: without this, the fp32 originals' pages stay resident
    # and the cast *adds* memory (SmolLM2: 966 -> 1150 MB RSS; with it: 746 MB).
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.dtype != torch.bfloat16:
                tensor.data = tensor.data.clone()
    return count


def unfreeze_linears_to_fp32(model: torch.nn.Module) -> int:
    """Undo :func:`freeze_linears_in_bf16` (the values keep their bf16 rounding)."""
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.dtype == torch.bfloat16:
            module.weight = torch.nn.Parameter(weight.detach().float(), requires_grad=weight.requires_grad)
            count += 1
    return count
