"""bf16 inference with the top logits recomputed in fp32 (dialogtune.models.logits)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.inference import load_for_inference
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
    assert type(half.model.get_output_embeddings().head) is nn.Linear
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
