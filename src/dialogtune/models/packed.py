"""bf16 linear layers whose weights are laid out once for the CPU's matrix kernel.

``torch.nn.functional.linear`` with bf16 weights on a CPU hands the weight to oneDNN in its
plain row-major layout, and oneDNN reorders it into its blocked layout on *every* call. For a
prompt of hundreds of tokens that reorder is lost in the product; for a decode step of 2 to 16
rows it is a large part of the call. Measured on this project's 2-core AMD EPYC (avx512_bf16,
one thread, SmolLM2-135M shapes): 1.3x faster at 16 rows, 1.5-2x at 2 rows (a lone request), and
the output layer (49,152 x 576) 1.5-1.7x. The blocked copy is made once, with the kernel
PyTorch's own compiler uses for frozen CPU models (``torch.ops.mkldnn._reorder_linear_weight`` +
``_linear_pointwise``), and gives **bit-identical** results to ``F.linear`` at every row count
(tested): it only saves the reorder, it does not change the arithmetic.

A third case made it worth more than the reorder: a single-row product with a 3-d input
(``[1, 1, hidden]``, the output layer after a prompt's prefill) went through a batched product
that copied the whole 49k x 576 output weight first, 190 ms per prompt; the packed kernel takes
it as it is.

**fp32 LoRA matrices** (:func:`pack_adapter_linears`): PEFT keeps an adapter's matrices in fp32.
``F.linear`` in fp32 goes to MKL, whose kernel for 1-3 rows (and, on two threads, for other small
row counts) rounds differently from its kernel for more rows: measured on this CPU, a LoRA product
of 2 rows differs in the last bits from the same rows inside a product of 4 or 16. In bf16 that
ulp moves the rounding of the layer's output, and a server's answer with an unmerged adapter then
depended on how many rows its step had: with draft tokens (more rows) 6 of 20 answers changed.
So the server's LoRA matrices compute a product of fewer than 16 rows as 16 rows (zeros added,
:class:`PaddedRowsLinear`): every row, a lone one included, then gets the bits it gets in any
larger product (tested at the real shapes, 1 and 2 threads), for ~5-7 us more per small product
and no extra memory. (oneDNN's blocked fp32 kernel is row-count-independent too, from 2 rows, but
its copies of the small matrices cost ~48 MB per r16 adapter, and it differs at 1 row.)

Only for inference: a layer whose weight needs gradients, lives off the CPU or is not bf16 uses
``F.linear`` as before. The blocked copy costs the layer's weight size again in memory (270 MB
for SmolLM2-135M); ``DIALOGTUNE_PACKED_WEIGHTS=0`` in the environment turns it off. Writes
through ``weight.data`` (which PyTorch does not count as changes) are not seen: call
:meth:`PackedLinear.unpack` after such a write.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

# The batch size the blocked layout is chosen for: decode steps of a continuous batch.
LAYOUT_ROWS = 16


def _onednn() -> bool:
    """oneDNN's blocked linear kernel is present (any precision) and packing is not turned off."""
    if os.environ.get("DIALOGTUNE_PACKED_WEIGHTS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and mkldnn is not None
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
    )


def available() -> bool:
    """Whether this PyTorch has oneDNN with native bf16 on this CPU (else packing buys nothing),
    and the user has not turned packing off (``DIALOGTUNE_PACKED_WEIGHTS=0``: saves the memory)."""
    return _onednn() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that keeps a oneDNN-blocked copy of its bf16 weight (made on first use).

    A subclass, so that PEFT still finds a linear layer to attach adapters to."""

    _packed: tuple[tuple[int, int], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            weight.dtype != torch.bfloat16
            or x.dtype != torch.bfloat16
            or weight.device.type != "cpu"
            or (weight.requires_grad and torch.is_grad_enabled())
        ):
            return F.linear(x, weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self._blocked(weight), self.bias, "none", [], "")

    def _blocked(self, weight: torch.Tensor) -> torch.Tensor:
        # Keyed on the storage and its version: a new tensor or an in-place change repacks.
        key = (weight.data_ptr(), weight._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), LAYOUT_ROWS))
        return self._packed[1]

    def unpack(self) -> None:
        """Forget the blocked copy (after writing the weight through ``.data``)."""
        self._packed = None


def _packable(module: nn.Module) -> bool:
    return type(module) is nn.Linear and module.weight.dtype == torch.bfloat16


def pack(linear: nn.Linear) -> nn.Linear:
    """Make plain ``linear`` a :class:`PackedLinear` in place (same parameters, same module
    object: wrappers and hooks holding it stay valid) when packing can help; returns it."""
    if _packable(linear) and available():
        linear.__class__ = PackedLinear
    return linear


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


def pack_adapter_linears(model: nn.Module) -> int:
    """Make the fp32 matrices of every LoRA layer of ``model`` (a server's unmerged adapters)
    :class:`PaddedRowsLinear`, so that a row's adapter output does not depend on the number of
    rows (see the module docstring); returns how many. Call again after loading an adapter."""
    count = 0
    for module in model.modules():
        for name in ("lora_A", "lora_B"):
            for layer in getattr(module, name, {}).values():
                if type(layer) is nn.Linear and layer.weight.dtype == torch.float32:
                    layer.__class__ = PaddedRowsLinear
                    count += 1
    return count


def pack_linears(model: nn.Module) -> int:
    """:func:`pack` every plain bf16 linear layer of ``model``; returns how many."""
    if not available():
        return 0
    layers = [module for module in model.modules() if _packable(module)]
    for layer in layers:
        layer.__class__ = PackedLinear
    return len(layers)
