"""A key/value cache with one slot per sequence, and attention that does not see the batch.

Batched generation usually left-pads prompts to a common length and masks the padding. In
exact arithmetic the masked keys change nothing; in floating point they change the order in
which the attention kernels sum, and in bf16 that flips greedy choices: measured on
SmolLM2-135M, 7 of 8 summaries differed between batch size 8 and 1. Two more things depend on
the batch in bf16 on this CPU: a matrix product with one row takes a matrix-vector kernel that
rounds differently from the matrix-matrix one, and nothing else does (products with two or more
rows give every row the same bits whatever the other rows are).

So, for decoder-only models:

* each prompt is prefilled on its own (no padding; SDPA's causal kernel);
* every sequence owns a cache slot and its keys start at position 0 of the slot, the unused
  tail being zeros; decoding attends over the first ``L`` positions, ``L`` the longest length
  rounded up to a multiple of 64, with the tail masked. Scores and the weighted sum are fp32
  matrix products whose reduction runs from position 0, in fixed chunks of 256 positions
  (:func:`weighted_sum`), so a zero tail adds exact zeros and a sequence gets the same bits in
  a batch of 16 as alone;
* a decode step never runs with one row (a single sequence is run twice), nor with more than
  :data:`MAX_ROWS` (oneDNN's bf16 kernel rounds a product of 33 or more rows differently from
  one of 2-32, measured at every SmolLM2 shape on one and two threads): on a CPU the engine
  decodes at most that many sequences at once.

With these, a sequence's output does not depend on what else is being generated — batch size,
order, or the other requests a server is handling — at any precision (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "dialogtune_ragged"
ALIGN = 64  # decode attends over a multiple of this many positions (see the module docstring)
MAX_ROWS = 32  # rows of a decode step at most (see the module docstring)
CHUNK = 256  # positions per product of the weighted sum (weighted_sum); a multiple of ALIGN
Group = tuple[int, int, "slice | torch.Tensor"]  # rows [start, stop) and the cache slots they read


def ragged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    dialogtune_lengths: torch.Tensor | None = None,
    dialogtune_groups: list[Group] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Prefill (one prompt, no padding): SDPA's causal kernel. Decode: exact masked attention
    over each row's first ``dialogtune_lengths[row]`` keys; ``key``/``value`` hold every slot
    and ``dialogtune_groups`` says which slot each row reads (:meth:`RaggedCache.begin_decode`)."""
    if dialogtune_lengths is None:  # a prompt on its own
        return sdpa_attention_forward(
            module, query, key, value, None, dropout, scaling, is_causal=True, **kwargs
        )
    if dialogtune_groups is None:  # every decode step needs both (the engine passes them)
        raise ValueError("a decode step needs dialogtune_groups (RaggedCache.groups) with its lengths")
    rows, heads, _, dim = query.shape
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    parts = [
        _attend(query[start:stop], key[slots], value[slots], dialogtune_lengths[start:stop], scale)
        for start, stop, slots in dialogtune_groups
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2), None


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """Row r's query against its own slot's keys (``key[r]``), the first ``lengths[r]`` of them."""
    rows, heads, _, dim = query.shape
    kv_heads, positions = key.shape[1], key.shape[2]
    with torch.autocast(query.device.type, enabled=False):  # fp32 here, even under bf16 autocast
        grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim).float()
        # scores: (rows, kv_heads, group, positions); out: (rows, kv_heads, group, dim)
        scores = torch.matmul(grouped, key.float().transpose(-1, -2)) * scale
        unused = torch.arange(positions, device=key.device) >= lengths.view(rows, 1, 1, 1)
        weights = torch.softmax(scores.masked_fill(unused, float("-inf")), dim=-1)
        return weighted_sum(weights, value.float()).to(query.dtype)


def weighted_sum(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``weights @ value`` over the positions, in products of at most :data:`CHUNK` positions
    added in order, so that a row's bits do not depend on how many positions the step spans.

    One product over all ``L`` positions does not give that: past a few hundred positions the
    matrix kernel (MKL) splits its sum over ``L`` into blocks whose size depends on ``L`` (448
    positions: two halves of 224), so a row of 250 keys summed over a span of 448 got other bits
    than over its own 256, and a summary changed with the other sequences beside it (measured
    on SmolLM2: 5 of 64 validation summaries differed between batches of 16 and 32). Chunks
    start at position 0 and have a fixed size; a chunk past a row's length adds exact zeros."""
    positions = value.shape[-2]
    out = torch.matmul(weights[..., :CHUNK], value[..., :CHUNK, :])
    for start in range(CHUNK, positions, CHUNK):
        out = out + torch.matmul(weights[..., start : start + CHUNK], value[..., start : start + CHUNK, :])
    return out


def row_groups(slots: list[int]) -> list[Group]:
    """``slots`` (each row's slot, in row order) cut into runs of rows whose slots do not repeat.

    A run's slots are a slice of the cache when they are consecutive (a view: no copy), else an
    index (a copy). A plain step (slots 0..n-1) is one run; a lone sequence's two identical rows
    are two runs of one view each; a step with drafts lists each sequence's first row, then each
    second row, and so on (the engine's order), so most runs are views too."""
    groups: list[Group] = []
    start = 0
    for stop in range(1, len(slots) + 1):
        if stop < len(slots) and slots[stop] not in slots[start:stop]:
            continue
        run = slots[start:stop]
        consecutive = run == list(range(run[0], run[0] + len(run)))
        groups.append((start, stop, slice(run[0], run[0] + len(run)) if consecutive else torch.tensor(run)))
        start = stop
    return groups


AttentionInterface.register(ATTENTION, ragged_attention)


class RaggedCache:
    """Per-sequence key/value slots for every layer (what the model's attention layers call).

    Holds ``slots`` sequences of up to ``capacity`` positions. The model calls :meth:`update`
    in each layer; the engine sets :attr:`phase` before each forward:

    * ``("prefill", slot)``: the keys of one prompt are stored at the start of ``slot``;
    * ``("decode", rows)``: ``rows`` (slot indices, a tensor) each get one new key at their own
      length, and attention sees the first ``align(max length)`` positions of those slots.
    """

    def __init__(
        self, layers: int, slots: int, capacity: int, kv_heads: int, head_dim: int, device: torch.device
    ) -> None:
        # Buffers take the dtype of the first keys stored (bf16 under autocast over fp32 weights).
        self._shape, self._device = (slots, kv_heads, _align(capacity), head_dim), device
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)  # tokens stored per slot
        self.phase: tuple[str, Any] = ("idle", None)
        self._span = 0
        self.groups: list[Group] = []  # the decode step's rows, by slot (row_groups)
        self._positions = torch.zeros(0, dtype=torch.long, device=device)  # where a decode step writes

    @property
    def capacity(self) -> int:
        return self._shape[2]

    @staticmethod
    def nbytes(layers: int, slots: int, capacity: int, kv_heads: int, head_dim: int) -> int:
        """The memory a cache of this shape takes with fp32 keys and values (bf16 values take less)."""
        return 2 * 4 * layers * slots * kv_heads * _align(capacity) * head_dim

    def buffers(
        self, layer: int, key_dtype: torch.dtype, value_dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer``'s key and value buffers, allocated on first use (in the dtypes the
        model produces them: under autocast, RoPE leaves keys in fp32 and values in bf16)."""
        if self.keys[layer] is None:
            self.keys[layer] = torch.zeros(self._shape, dtype=key_dtype, device=self._device)
            self.values[layer] = torch.zeros(self._shape, dtype=value_dtype or key_dtype, device=self._device)
        return self.keys[layer], self.values[layer]  # type: ignore[return-value]

    def allocated(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k, v) for k, v in zip(self.keys, self.values) if k is not None and v is not None]

    def begin_prefill(self, slot: int) -> None:
        self.phase = ("prefill", slot)

    def begin_decode(self, rows: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Prepare a decode step for ``rows``; returns each row's key count after the step.

        ``positions``: where each row's key goes (default: its slot's length). A slot may then
        appear in several rows, at consecutive positions: the tokens of a draft, each row
        attending to the keys before its own and its own (see :meth:`settle`)."""
        self.phase = ("decode", rows)
        self._positions = self.lengths[rows] if positions is None else positions
        self.groups = row_groups(rows.tolist())
        after = self._positions + 1
        self._span = min(_align(int(after.max())), self.capacity)
        return after

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kind, where = self.phase
        keys, values = self.buffers(layer_idx, key_states.dtype, value_states.dtype)
        if kind == "prefill":
            n = key_states.shape[2]
            keys[where, :, :n] = key_states[0].to(keys.dtype)
            values[where, :, :n] = value_states[0].to(values.dtype)
            return key_states, value_states  # the prompt attends to itself only
        position = self._positions
        keys[where, :, position] = key_states[:, :, 0].to(keys.dtype)
        values[where, :, position] = value_states[:, :, 0].to(values.dtype)
        # Every slot: the attention picks each row's (self.groups, passed by the engine).
        return keys[:, :, : self._span], values[:, :, : self._span]

    def finish(self, kind: str, slot_or_rows: Any, tokens: int = 1) -> None:
        if kind == "prefill":
            self.lengths[slot_or_rows] = tokens
        else:
            self.lengths[slot_or_rows] += 1
        self.phase = ("idle", None)

    def settle(self, slot: int, length: int, written: int) -> None:
        """After a step with explicit positions: ``slot`` keeps its first ``length`` keys; the
        ones written beyond, up to ``written`` (a rejected draft), go back to zeros."""
        if written > length:
            for keys, values in self.allocated():
                keys[slot, :, length:written] = 0
                values[slot, :, length:written] = 0
        self.lengths[slot] = length
        self.phase = ("idle", None)

    def move(self, source: int, target: int) -> None:
        """Copy slot ``source`` into ``target`` (to keep the live slots contiguous)."""
        n = int(self.lengths[source])
        for keys, values in self.allocated():
            keys[target, :, :n] = keys[source, :, :n]
            values[target, :, :n] = values[source, :, :n]
            keys[target, :, n:] = 0  # the zero tail the exactness argument relies on
            values[target, :, n:] = 0
        self.lengths[target] = n

    def clear(self, slot: int) -> None:
        n = int(self.lengths[slot])
        for keys, values in self.allocated():
            keys[slot, :, :n] = 0
            values[slot, :, :n] = 0
        self.lengths[slot] = 0


def _align(n: int) -> int:
    return max(ALIGN, (n + ALIGN - 1) // ALIGN * ALIGN)
