"""Loading for inference: precision, and adapters merged into a private copy of the base."""

from __future__ import annotations

import pytest
import torch

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models import load_model
from dialogtune.models.inference import load_for_inference
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes, at noon.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes, they say.",
]


@pytest.mark.parametrize("spec", ["random:tiny-llama", "random:tiny-t5"])
def test_merged_for_inference_equals_unmerged(tmp_path, spec):
    adapter = str(make_random_adapter(spec, tmp_path / "a", seed=5))
    merged = load_for_inference(spec, adapter=adapter, precision="fp32")
    unmerged = load_for_inference(spec, adapter=adapter, precision="fp32", merge="no")
    assert merged.adapter_merged and not unmerged.adapter_merged
    assert not any("lora" in name for name, _ in merged.model.named_parameters())  # a plain model
    inputs = merged.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    if merged.kind.name == "seq2seq":
        inputs["decoder_input_ids"] = torch.zeros((2, 3), dtype=torch.long)
    with torch.no_grad():
        ours, theirs = merged.model(**inputs).logits, unmerged.model(**inputs).logits
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()  # W + BA, summed in another order
        base = load_model(spec, dtype="fp32").model(**inputs).logits
        assert not torch.allclose(base, merged.model(**inputs).logits, atol=1e-3)  # the adapter matters
    settings = GenerationSettings(max_new_tokens=12)
    assert generate(merged, DIALOGUES, settings).texts == generate(unmerged, DIALOGUES, settings).texts
    # bf16: the merge is done in fp32, then rounded once; logits agree within bf16's precision.
    half = load_for_inference(spec, adapter=adapter, precision="bf16")
    assert half.precision == "bf16" and half.adapter_merged
    with torch.no_grad():
        low = half.model(**inputs).logits.float()
    high = merged.model(**inputs).logits
    assert (low - high).abs().max() <= 0.05 * high.abs().max()
    assert half.describe()["adapter_merged"] is True and half.describe()["precision"] == "bf16"
