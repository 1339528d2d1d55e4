"""bf16 inference with the top logits recomputed in fp32 (dialogtune.models.logits)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.inference import load_for_adapters, load_for_inference
from dialogtune.models.logits import RefinedLogits, logits_refined, refine_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes, at noon.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes, they say, maybe more.",
    "#Person1#: Tea?\n#Person2#: Please.",
]


def test_a_near_tie_rounded_away_in_bf16_is_decided_as_fp32_decides_it() -> None:
    # Token 1's logit is 20.03125, token 0's 20.0: bf16 keeps 8 significant bits, so both come
    # out of a bf16 product as 20.0 and argmax takes token 0. The refined layer takes token 1.
    head = nn.Linear(4, 3, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        head.weight.copy_(
            torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.03125], [1.0, 0.0, 0.0, 0.0]])
        )
    hidden = torch.ones(1, 1, 4, dtype=torch.bfloat16)
    plain = head(hidden)
    assert plain[0, 0, 0] == plain[0, 0, 1] and int(plain[0, 0].argmax()) == 0  # the tie, lost
    refined = RefinedLogits(head, k=2)(hidden)
    assert refined.dtype == torch.float32
    assert refined[0, 0, 1].item() == 20.03125 and refined[0, 0, 0].item() == 20.0
    assert int(refined[0, 0].argmax()) == 1
    assert refined[0, 0, 2].item() == plain[0, 0, 2].item()  # outside the top k: the bf16 value


def test_refined_top_logits_equal_an_fp32_product_of_the_same_weights() -> None:
    torch.manual_seed(0)
    head = nn.Linear(64, 500, bias=True).to(torch.bfloat16)
    hidden = torch.randn(2, 5, 64).to(torch.bfloat16)
    refined = RefinedLogits(head, k=8)(hidden)
    exact = nn.functional.linear(hidden.float(), head.weight.float(), head.bias.float())
    top = refined.topk(8, dim=-1).indices
    assert torch.allclose(refined.gather(-1, top), exact.gather(-1, top), atol=1e-4)
    assert torch.equal(refined.argmax(-1), exact.argmax(-1))


@pytest.mark.parametrize("spec", ["random:tiny-llama", "random:tiny-t5"])
def test_bf16_inference_refines_the_logits_and_fp32_leaves_them(spec: str) -> None:
    half = load_for_inference(spec, precision="bf16")
    full = load_for_inference(spec, precision="fp32")
    assert logits_refined(half.model) and not logits_refined(full.model)
    assert half.describe()["logits"] == "fp32 for the top 8" and full.describe()["logits"] == "fp32"
    assert half.describe()["precision"] == "bf16"  # the model still computes in bf16
    assert refine_logits(half.model)  # idempotent: wrapped once
    assert isinstance(half.model.get_output_embeddings().head, nn.Linear)  # not wrapped twice
    inputs = half.tokenizer(DIALOGUES[:1], return_tensors="pt")
    if half.kind.name == "seq2seq":
        inputs["decoder_input_ids"] = torch.zeros((1, 2), dtype=torch.long)
    with torch.no_grad():
        assert half.model(**inputs).logits.dtype == torch.float32
    # Generation: batched equals one at a time with the refined layer too.
    settings = GenerationSettings(max_new_tokens=10, batch_size=3)
    together = generate(half, DIALOGUES, settings).texts
    alone = [
        generate(half, [d], GenerationSettings(max_new_tokens=10, batch_size=1)).texts[0] for d in DIALOGUES
    ]
    assert together == alone


def test_refined_logits_with_a_merged_adapter(tmp_path) -> None:
    from dialogtune.serving.demo_adapters import make_random_adapter

    adapter = str(make_random_adapter("random:tiny-llama", tmp_path / "a", seed=3))
    half = load_for_inference("random:tiny-llama", adapter=adapter, precision="bf16")
    assert half.adapter_merged and logits_refined(half.model)
    unmerged = load_for_inference("random:tiny-llama", adapter=adapter, precision="bf16", merge="no")
    assert logits_refined(unmerged.model)  # under the PEFT wrapper, on the base model's head


def test_bf16_inference_keeps_an_fp32_residual_stream() -> None:
    from dialogtune.models.mixed import LowPrecisionLinear, is_mixed

    half = load_for_inference("random:tiny-llama", precision="bf16")
    assert is_mixed(half.model) and half.precision == "bf16"
    assert half.describe()["residual_stream"] == "fp32"
    base = half.model.model
    assert base.embed_tokens.weight.dtype == torch.float32  # embeddings and norms stay fp32
    assert base.norm.weight.dtype == torch.float32
    linears = [m for m in base.modules() if isinstance(m, LowPrecisionLinear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert not any(type(m) is nn.Linear and m.weight.dtype == torch.float32 for m in half.model.modules())
    # Closer to fp32 than the model cast whole to bf16 (its residual stream rounded at every layer).
    full = load_for_inference("random:tiny-llama", precision="fp32")
    cast = load_for_adapters("random:tiny-llama", precision="bf16")  # the whole model cast
    assert cast.precision == "bf16" and logits_refined(cast.model) and not is_mixed(cast.model)
    inputs = full.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    with torch.no_grad():
        exact = full.model(**inputs).logits
        mixed_error = (half.model(**inputs).logits - exact).abs().mean()
        cast_error = (cast.model(**inputs).logits - exact).abs().mean()
    assert mixed_error < cast_error


def test_fp32_residual_stream_with_an_unmerged_adapter_and_with_t5(tmp_path) -> None:
    from dialogtune.models.mixed import is_mixed
    from dialogtune.serving.demo_adapters import make_random_adapter

    adapter = str(make_random_adapter("random:tiny-llama", tmp_path / "a", seed=4))
    merged = load_for_inference("random:tiny-llama", adapter=adapter, precision="bf16")
    unmerged = load_for_inference("random:tiny-llama", adapter=adapter, precision="bf16", merge="no")
    bare = load_for_inference("random:tiny-llama", precision="bf16")
    assert is_mixed(unmerged.model) and not unmerged.adapter_merged
    inputs = merged.tokenizer(DIALOGUES[:1], return_tensors="pt")
    with torch.no_grad():
        a, b, c = (m.model(**inputs).logits for m in (merged, unmerged, bare))
    assert (a - b).abs().max() < (a - c).abs().max() / 4  # the adapter acts, merged or not
    t5 = load_for_inference("random:tiny-t5", precision="bf16")
    assert is_mixed(t5.model) and t5.precision == "bf16"
    texts = generate(t5, DIALOGUES, GenerationSettings(max_new_tokens=6, batch_size=3)).texts
    assert len(texts) == 3


@pytest.mark.parametrize("spec", ["random:tiny-llama", "random:tiny-t5"])
def test_the_fp32_residual_stream_keeps_the_models_parameter_count(spec: str) -> None:
    from dialogtune.models.params import count_parameters

    full = load_for_inference(spec, precision="fp32")
    half = load_for_inference(spec, precision="bf16")
    assert count_parameters(half.model)["total"] == count_parameters(full.model)["total"]
    inputs = half.tokenizer(DIALOGUES[:1], return_tensors="pt")
    if half.kind.name == "seq2seq":
        inputs["decoder_input_ids"] = torch.zeros((1, 2), dtype=torch.long)
    with torch.no_grad():
        low, high = half.model(**inputs).logits, full.model(**inputs).logits
    assert (low - high).abs().max() <= 0.05 * high.abs().max()
