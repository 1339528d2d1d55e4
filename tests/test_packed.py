"""bf16 linear layers with a pre-blocked weight: the same bits as F.linear, at every row count."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn import functional as F

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models import lora_rows, packed
from dialogtune.models.inference import load_for_adapters, load_for_inference
from dialogtune.models.loading import load_model
from dialogtune.models.mixed import LowPrecisionLinear
from dialogtune.models.packed import PackedLinear, pack, pack_linears

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not packed.available(), reason="no oneDNN bf16 on this CPU"),
]


def _linear(n_in: int, n_out: int, bias: bool = False, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias).to(torch.bfloat16).requires_grad_(False)


@pytest.mark.parametrize("shape", [(1, 96), (2, 96), (16, 96), (1, 1, 96), (3, 7, 96)])
@pytest.mark.parametrize("bias", [False, True])
def test_same_bits_as_f_linear(shape, bias) -> None:
    layer = _linear(96, 160, bias)
    x = torch.randn(shape).to(torch.bfloat16)
    expected = F.linear(x, layer.weight, layer.bias)
    assert pack(layer) is layer and isinstance(layer, PackedLinear)
    with torch.inference_mode():
        got = layer(x)
    assert layer._packed is not None  # the blocked kernel ran, not the fallback
    assert got.shape == expected.shape and torch.equal(got, expected)


def test_a_row_does_not_depend_on_the_other_rows() -> None:
    layer = pack(_linear(96, 160))
    x = torch.randn(4, 96).to(torch.bfloat16)
    other = torch.cat([x[:1], torch.randn(5, 96).to(torch.bfloat16)])
    with torch.inference_mode():
        assert torch.equal(layer(x)[0], layer(other)[0])


def test_repacks_after_an_in_place_change_and_falls_back_when_it_cannot_help() -> None:
    layer = pack(_linear(32, 48))
    x = torch.randn(2, 32).to(torch.bfloat16)
    with torch.inference_mode():
        before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(2)  # e.g. an optimizer step: the version counter moves
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, layer.weight)) and not torch.equal(layer(x), before)
    # .data writes are invisible to the version counter: unpack() is the documented way
    layer.weight.data.mul_(2)
    layer.unpack()
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, layer.weight))
    # fp32 input, or gradients wanted: plain F.linear (no blocked copy involved)
    trainable = pack(_linear(32, 48)).requires_grad_(True)
    out = trainable(x)
    assert out.requires_grad and trainable._packed is None
    assert torch.equal(trainable(x.float().to(torch.bfloat16)), out.detach())
    assert pack(nn.Linear(4, 4)).__class__ is nn.Linear  # fp32 weights are left alone


def test_inference_loaders_pack_every_bf16_product_and_outputs_do_not_change() -> None:
    dialogues = ["#Person1#: Hi, how are you?\n#Person2#: Fine, thanks. And you?"] * 2 + [
        "#Person1#: Where is the station?\n#Person2#: Two blocks down, on the left."
    ]
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    mixed = load_for_inference("random:tiny-llama", precision="bf16")
    layers = [m for m in mixed.model.modules() if isinstance(m, LowPrecisionLinear)]
    assert layers and all(isinstance(m.inner, PackedLinear) for m in layers)
    assert isinstance(mixed.model.get_output_embeddings().head, PackedLinear)
    fast = generate(mixed, dialogues, settings, progress=False).texts
    for module in mixed.model.modules():  # undo the packing: plain F.linear everywhere
        if isinstance(module, PackedLinear):
            module.__class__ = nn.Linear
    assert generate(mixed, dialogues, settings, progress=False).texts == fast

    cast = load_for_adapters("random:tiny-llama", precision="bf16")
    assert sum(isinstance(m, PackedLinear) for m in cast.model.modules()) > 0


def test_peft_attaches_to_packed_layers_and_computes_the_same() -> None:
    base = load_model("random:tiny-llama", dtype="bf16").model
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    plain = get_peft_model(base, config)
    ids = torch.randint(0, 100, (2, 9))
    with torch.inference_mode():
        expected = plain(input_ids=ids).logits
        assert pack_linears(plain) > 0
        assert isinstance(plain.base_model.model.model.layers[0].self_attn.q_proj.base_layer, PackedLinear)
        assert torch.equal(plain(input_ids=ids).logits, expected)


def test_packing_can_be_turned_off_to_save_memory(monkeypatch) -> None:
    monkeypatch.setenv("DIALOGTUNE_PACKED_WEIGHTS", "0")
    assert not packed.available()
    assert type(pack(_linear(8, 8))) is nn.Linear
    mixed = load_for_inference("random:tiny-llama", precision="bf16")
    assert not any(isinstance(m, PackedLinear) for m in mixed.model.modules())


def test_fp32_lora_products_do_not_depend_on_the_row_count() -> None:
    """PEFT keeps LoRA matrices in fp32; MKL's fp32 kernel rounds 1-3 rows differently from more
    (on this CPU), which made a server's answers with an unmerged adapter depend on its step's
    size. Padded to 16 rows, a row gets the same bits in a product of 1, 2, 3, 4, 7, 16 or 32 rows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(576, 64))
    model = get_peft_model(model, LoraConfig(r=16, target_modules=["0"], init_lora_weights=False))
    lora = model.base_model.model[0]
    assert lora_rows.pad_adapter_rows(model) == 2
    a, b = lora.lora_A["default"], lora.lora_B["default"]
    assert isinstance(a, lora_rows.PaddedRowsLinear) and isinstance(b, lora_rows.PaddedRowsLinear)
    x = torch.randn(32, 576)
    with torch.inference_mode():
        full = b(a(x))
        for rows in (1, 2, 3, 4, 7, 16):
            assert torch.equal(b(a(x[:rows])), full[:rows])
        assert torch.equal(b(a(x[:3].view(1, 3, 576))), full[:3].view(1, 3, 64))  # a 3-d input too
    assert torch.allclose(full, F.linear(F.linear(x, a.weight), b.weight), atol=1e-5)


def test_the_adapter_server_packs_each_loaded_adapter(tmp_path) -> None:
    from dialogtune.serving import AdapterRegistry
    from dialogtune.serving.demo_adapters import make_random_adapter

    registry = AdapterRegistry(load_for_adapters("random:tiny-llama"))
    registry.load("a0", str(make_random_adapter("random:tiny-llama", tmp_path / "a0", seed=1, r=4)))
    loras = [m for m in registry.loaded.model.modules() if hasattr(m, "lora_A") and "a0" in m.lora_A]
    assert loras and all(isinstance(m.lora_A["a0"], lora_rows.PaddedRowsLinear) for m in loras)
    assert all(isinstance(m.lora_B["a0"], lora_rows.PaddedRowsLinear) for m in loras)
