"""Exact next-token choices for a model computing in bf16: the top logits recomputed in fp32.

A bf16 matrix product accumulates in fp32 but rounds its *output* to bf16, which keeps 8
significant bits: logits around 20 come out as multiples of 0.125. Two candidate tokens whose
fp32 logits differ by less than that are then tied, and greedy decoding takes the lower token
id, whichever the model preferred. A fine-tuned model is usually sure of its next token; a
zero-shot model rambling through 64 tokens meets such near-ties often, and each one sends its
summary down another path (measured: 78 of 500 zero-shot summaries identical to fp32 with bf16
logits; docs/generation.md).

:class:`RefinedLogits` keeps the output layer's product over the whole vocabulary in bf16 (the
fast part: one pass over the 49k x 576 embedding) and then recomputes the ``k`` best candidates'
logits in fp32 from the same bf16 hidden state and weights — ``k`` dot products per row, nothing
next to the full product. The logits it returns are fp32; outside the top ``k`` they are the
bf16 values. The greedy choice is the fp32 argmax of the bf16 model unless the true best token
is outside the bf16 top ``k``, which would take a rounding error hundreds of times larger than
bf16's. Sampling sees fp32 logits for the tokens that carry nearly all the probability.
"""

from __future__ import annotations

import torch
from torch import nn

from dialogtune.models.loaded import innermost

TOP_K = 8


class RefinedLogits(nn.Module):
    """An output layer whose top-``k`` logits per position are recomputed in fp32."""

    def __init__(self, head: nn.Linear, k: int = TOP_K) -> None:
        super().__init__()
        self.head = head
        self.k = k

    @property
    def weight(self) -> torch.Tensor:  # what callers of get_output_embeddings().weight expect
        return self.head.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.head.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The hidden state may be fp32 (an fp32 residual stream, dialogtune.models.mixed): the
        # full product takes it in the head's format, the top candidates in full.
        logits = self.head(hidden.to(self.head.weight.dtype)).float()
        top = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices  # [..., k]
        weights = self.head.weight[top].float()  # [..., k, hidden]
        exact = (hidden.float().unsqueeze(-2) * weights).sum(-1)
        if self.head.bias is not None:
            exact = exact + self.head.bias[top].float()
        return logits.scatter(-1, top, exact)


def output_layer(model: nn.Module) -> nn.Module | None:
    """The transformers model's output layer under any wrappers (None for models without one)."""
    base = innermost(model)
    return base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None


def refine_logits(model: nn.Module, k: int = TOP_K) -> bool:
    """Wrap ``model``'s output layer in :class:`RefinedLogits` when it computes below fp32.

    For inference only (the wrapper is not saved and training should see the plain layer).
    Returns whether the layer was wrapped: not for fp32 weights, a layer already wrapped, or an
    output layer that is not a plain linear one.
    """
    head = output_layer(model)
    if isinstance(head, RefinedLogits):
        return True
    if type(head) is not nn.Linear or head.weight.dtype == torch.float32:
        return False
    innermost(model).set_output_embeddings(RefinedLogits(head, k))
    return True


def logits_refined(model: nn.Module) -> bool:
    return isinstance(output_layer(model), RefinedLogits)
