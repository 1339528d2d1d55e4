"""The ragged engine's batch independence at real sizes: long sequences, many rows.

The end-to-end tests (test_generation.py) use tiny models whose sequences stay short; these
check the two kernels whose rounding changed with the batch at SmolLM2's sizes: the attention's
weighted sum past a few hundred positions, and bf16 products of more than 32 rows.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dialogtune.generation import engine
from dialogtune.generation.ragged import ALIGN, CHUNK, MAX_ROWS, _attend, weighted_sum
from dialogtune.models import load_model, packed

KV_HEADS, HEADS, DIM = 3, 9, 64  # SmolLM2-135M


def _slots(rows: int, lengths: list[int], span: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values for ``rows`` sequences of ``lengths``, keys past a length zero."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, HEADS, 1, DIM, generator=generator)
    keys = torch.randn(rows, KV_HEADS, span, DIM, generator=generator)
    values = torch.randn(rows, KV_HEADS, span, DIM, generator=generator)
    for row, length in enumerate(lengths):
        keys[row, :, length:] = 0
        values[row, :, length:] = 0
    return query, keys, values


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("length", [70, 250, 300, 333, 400, 517, 700])
def test_a_row_gets_the_same_attention_whatever_the_span_of_the_step(length) -> None:
    """A sequence alone attends over its own aligned length; beside a longer one, over the
    longer one's. Same bits either way (the old single product differed from ~330 keys on)."""
    own = max(ALIGN, -(-length // ALIGN) * ALIGN)
    query, keys, values = _slots(2, [length, 1024], 1024)
    lengths = torch.tensor([length, 1024])
    scale = DIM**-0.5
    alone = _attend(query[:1], keys[:1, :, :own], values[:1, :, :own], lengths[:1], scale)
    for span in range(own, 1025, ALIGN):
        beside = _attend(query, keys[:, :, :span], values[:, :, :span], lengths, scale)
        assert torch.equal(beside[0], alone[0]), f"row of {length} keys changed with a span of {span}"


def test_the_weighted_sum_is_the_product_in_fixed_chunks() -> None:
    weights = torch.softmax(torch.randn(4, 3, 3, 3 * CHUNK + ALIGN), dim=-1)
    values = torch.randn(4, 3, 3 * CHUNK + ALIGN, DIM)
    got = weighted_sum(weights, values)
    assert torch.allclose(got, weights @ values, atol=1e-5)
    by_hand = sum(
        weights[..., s : s + CHUNK] @ values[..., s : s + CHUNK, :] for s in range(0, 4 * CHUNK, CHUNK)
    )
    assert torch.equal(got, by_hand)  # chunk by chunk, in order
    short = torch.softmax(torch.randn(4, 3, 3, CHUNK), dim=-1)
    assert torch.equal(weighted_sum(short, values[..., :CHUNK, :]), short @ values[..., :CHUNK, :])


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.skipif(not packed.available(), reason="no oneDNN bf16 on this CPU")
@pytest.mark.parametrize("shape", [(1536, 576), (576, 1536), (192, 576), (49152, 576)])
def test_bf16_products_of_up_to_max_rows_give_each_row_its_lone_bits(shape) -> None:
    """What lets the engine decode up to MAX_ROWS sequences at once (each row as if alone)."""
    out_features, in_features = shape
    torch.manual_seed(0)
    layer = packed.pack(torch.nn.Linear(in_features, out_features, bias=False).to(torch.bfloat16))
    x = torch.randn(MAX_ROWS, 1, in_features).to(torch.bfloat16)
    with torch.inference_mode():
        lone = torch.cat(
            [layer(x[r : r + 1].expand(2, 1, in_features).contiguous())[:1] for r in range(MAX_ROWS)]
        )
        for rows in (2, 5, 16, 17, 31, MAX_ROWS):
            assert torch.equal(layer(x[:rows]), lone[:rows]), f"{rows} rows"
        assert torch.equal(layer(x[:4]), F.linear(x[:4], layer.weight))


def test_the_engine_decodes_at_most_max_rows_sequences_at_once() -> None:
    model = load_model("random:tiny-llama").model
    assert engine.RaggedEngine(model, [0], slots=64).slots == MAX_ROWS
    assert engine.RaggedEngine(model, [0], slots=8).slots == 8
    # the memory estimate (engine processes decide on it) counts the slots the engine will have
    assert engine.cache_bytes(model, 64, 10, 5) == engine.cache_bytes(model, MAX_ROWS, 10, 5)
    assert engine.cache_bytes(model, 8, 10, 5) < engine.cache_bytes(model, MAX_ROWS, 10, 5)


def test_an_engine_off_the_cpu_takes_the_slots_asked_for() -> None:
    """The cap is a CPU kernel's limit; a GPU's kernels were not measured (meta stands in)."""
    model = load_model("random:tiny-llama").model.to("meta")
    assert engine.RaggedEngine(model, [0], slots=64).slots == 64
