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


@pytest.mark.skipif(
    not __import__("os").path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps"
)
def test_bf16_inference_does_not_keep_the_weights_file_mapped(tmp_path):
    """The tensors kept in fp32 (embeddings, norms) are copied out of the memory-mapped weights
    file, so that the file (with the fp32 weights already converted to bf16) is released: a view
    into the mapping kept all of it resident (SmolLM2-135M: 798 MB instead of 393 MB)."""
    source = load_model("random:tiny-llama", dtype="fp32")
    source.model.save_pretrained(tmp_path / "m")
    source.tokenizer.save_pretrained(tmp_path / "m")

    def in_mapped_file(tensors) -> int:
        ranges = []
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                if line.rstrip().endswith("model.safetensors"):
                    start, end = (int(x, 16) for x in line.split()[0].split("-"))
                    ranges.append((start, end))
        return sum(any(a <= t.data_ptr() < b for a, b in ranges) for t in tensors)

    fp32 = load_model(str(tmp_path / "m"), dtype="fp32")
    assert (
        in_mapped_file(fp32.model.parameters()) > 0
    )  # loaded as views of the file: the test means something
    loaded = load_for_inference(str(tmp_path / "m"), precision="bf16")
    kept = [p for p in loaded.model.parameters() if p.dtype == torch.float32]
    assert kept and in_mapped_file(kept) == 0
    assert generate(loaded, DIALOGUES, GenerationSettings(max_new_tokens=4)).texts  # still works
