"""A memory-saving causal-LM loss: the vocabulary projection only where tokens are learned.

A causal model's own loss computes logits for every position: ``batch x seq x vocab`` floats.
For SmolLM2 (49,152 tokens) and a batch of 8 x 400 tokens that is 8 * 400 * 49152 * 4 B
= 629 MB for the logits, as much again for their gradient, plus the fp32 copy the loss
makes. But with the prompt masked (-100) only the summary positions are ever learned:
~35 of ~290 tokens per DialogSum example. We ask the model for logits only at those
positions (transformers' ``logits_to_keep`` accepts a tensor of positions), which cuts the
lm_head matmul and the logits memory by ~8x, and compute the same cross-entropy on them.

The forward still goes through the outermost wrapper (DDP, PEFT), so gradient sync and
LoRA layers work unchanged. Models whose ``forward`` has no ``logits_to_keep`` (seq2seq:
their decoder only runs on the label positions anyway) keep their own loss, and so do methods
that prepend virtual tokens (prompt tuning: the learned positions move; the recipe asks the method).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from dialogtune.models.kinds import IGNORE_INDEX, kind_for_config
from dialogtune.models.loaded import innermost


def supports_selective_loss(model: torch.nn.Module) -> bool:
    """True for models that can return logits at chosen positions only (decoder-only LMs)."""
    base = innermost(model)
    if not kind_for_config(base.config).selective_loss:
        return False
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def selective_causal_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    num_items_in_batch: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The causal-LM cross-entropy of ``model`` on ``inputs`` (with ``labels``), computed
    only at positions some row of the batch learns from.

    Equals the model's own loss: the mean over label tokens, or their sum divided by
    ``num_items_in_batch`` when the Trainer passes it (token-weighted gradient accumulation).
    ``label_smoothing`` is PyTorch's, the same mixture as transformers' ``LabelSmoother``:
    ``(1 - x) * nll + x * mean over the vocabulary of -log p``.
    """
    labels = inputs["labels"]
    targets = labels[:, 1:]  # logits at position t predict token t + 1
    learned = targets != IGNORE_INDEX
    # Positions where at least one row has a label. With left padding (causal) every row's
    # summary ends at the last position, so this is one short block at the end.
    keep = learned.any(dim=0).nonzero().squeeze(1)
    forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**forward_inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits  # [batch, len(keep), vocab]
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),  # fp32 for the softmax, as transformers does
        targets[:, keep].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if num_items_in_batch is None:
        num_items_in_batch = learned.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device).clamp(min=1)
    else:
        num_items_in_batch = max(int(num_items_in_batch), 1)
    return loss / num_items_in_batch
