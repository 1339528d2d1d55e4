"""fp32 LoRA products whose rows do not depend on how many rows came with them.

PEFT keeps an adapter's matrices in fp32 even over a bf16 model. ``F.linear`` in fp32 goes to
MKL, whose kernel for 1-3 rows (and, on two threads, for other small row counts) rounds
differently from its kernel for more rows: measured on this project's CPU at every SmolLM2 LoRA
shape, a row of a 2-row product differs in the last bits from the same row inside a product of 4
or 16. In bf16 that ulp moves the rounding of the layer's output, so a server's answer with an
unmerged adapter depended on how many rows its decode step had: with draft tokens (more rows) 6
of 20 answers changed.

So the server's LoRA matrices compute a product of fewer than :data:`PAD_ROWS` rows as
``PAD_ROWS`` rows, zeros added (:class:`PaddedRowsLinear`): every row, a lone one included, then
gets the bits it gets in any larger product (tested at the real shapes, 1 and 2 threads), for
~5-7 us more per small product and no extra memory. (oneDNN's blocked fp32 kernel is
row-count-independent too, from 2 rows, but its copies of the small matrices cost ~48 MB per r16
adapter, and it differs at 1 row.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# fp32 products of fewer rows than this are computed as this many (zero rows added): MKL rounds a
# row alike in every product of 12 or more rows (checked, 1 and 2 threads, every LoRA shape).
PAD_ROWS = 16


class PaddedRowsLinear(nn.Linear):
    """An fp32 ``nn.Linear`` whose products of fewer than :data:`PAD_ROWS` rows are computed as
    ``PAD_ROWS`` rows, so that a row's bits do not depend on how many rows came with it (1 included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if self.weight.dtype != torch.float32 or x.dtype != torch.float32 or rows >= PAD_ROWS or rows == 0:
            return F.linear(x, self.weight, self.bias)
        padded = x.new_zeros(PAD_ROWS, x.shape[-1])
        padded[:rows] = x.reshape(rows, -1)
        return F.linear(padded, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], -1)


def pad_adapter_rows(model: nn.Module) -> int:
    """Make the fp32 matrices of every LoRA layer of ``model`` (a server's unmerged adapters)
    :class:`PaddedRowsLinear` in place; returns how many. Call again after loading an adapter."""
    count = 0
    for module in model.modules():
        for name in ("lora_A", "lora_B"):
            for layer in getattr(module, name, {}).values():
                if type(layer) is nn.Linear and layer.weight.dtype == torch.float32:
                    layer.__class__ = PaddedRowsLinear
                    count += 1
    return count
