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


def available() -> bool:
    """Whether this PyTorch has oneDNN with native bf16 on this CPU (else packing buys nothing),
    and the user has not turned packing off (``DIALOGTUNE_PACKED_WEIGHTS=0``: saves the memory)."""
    if os.environ.get("DIALOGTUNE_PACKED_WEIGHTS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and mkldnn is not None
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


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


def pack_linears(model: nn.Module) -> int:
    """:func:`pack` every plain bf16 linear layer of ``model``; returns how many."""
    if not available():
        return 0
    layers = [module for module in model.modules() if _packable(module)]
    for layer in layers:
        layer.__class__ = PackedLinear
    return len(layers)
