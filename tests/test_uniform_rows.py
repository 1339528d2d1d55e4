"""A step whose rows share one adapter takes the direct path: PEFT's per-row bits, less work."""

from __future__ import annotations

import functools

import pytest
import torch

from dialogtune.generation import GenerationSettings, generate_ids, uniform_rows
from dialogtune.generation.uniform_rows import BASE_ROW, UniformRowsLinear, one_adapter
from dialogtune.models.inference import load_for_adapters
from dialogtune.models.loading import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.serving import AdapterRegistry
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes, at noon.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes, they say. Take a seat.",
    "#Person1#: Where are my keys?\n#Person2#: On the table.",
]


def _registry(tiny_adapters, precision: str) -> AdapterRegistry:
    base = load_for_adapters("random:tiny-llama", precision=precision)
    registry = AdapterRegistry(base)
    for name, path in tiny_adapters.items():
        registry.load(name, path)
    return registry


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_direct_path_gives_the_per_row_paths_bits(tiny_adapters, precision) -> None:
    model = _registry(tiny_adapters, precision).loaded.model
    assert uniform_rows.install(model)
    assert any(isinstance(m, UniformRowsLinear) for m in model.modules())
    ids = torch.randint(3, 200, (2, 7))
    with torch.inference_mode():
        for name in ("a0", "a1", BASE_ROW):
            per_row = model(input_ids=ids, adapter_names=[name, name]).logits
            with one_adapter(name):
                direct = model(input_ids=ids).logits
            assert torch.equal(direct, per_row), name
        # outside one_adapter the layer is PEFT's: adapters differ, per-row names still work
        a0 = model(input_ids=ids, adapter_names=["a0", "a0"]).logits
        a1 = model(input_ids=ids, adapter_names=["a1", "a1"]).logits
        assert not torch.equal(a0, a1)


def test_the_engine_takes_it_only_when_every_row_shares_the_adapter(tiny_adapters, monkeypatch) -> None:
    registry = _registry(tiny_adapters, "fp32")
    model = registry.loaded.model
    seen: list[tuple[bool, str | None]] = []  # (adapter_names passed, the direct path's adapter)
    forward = model.forward

    def spy(*args, **kwargs):
        seen.append(("adapter_names" in kwargs, uniform_rows._UNIFORM.get()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    alone = [registry.generate([d], ["a1"], settings, PromptTemplate())[0] for d in DIALOGUES]
    assert seen and all(not names and adapter == "a1" for names, adapter in seen)
    seen.clear()
    mixed = registry.generate(DIALOGUES, ["a1", None, "a0"], settings, PromptTemplate())
    assert any(names and adapter is None for names, adapter in seen)  # mixed steps: per-row names
    assert mixed[0] == alone[0]  # the same answer alone and in a mixed batch
    monkeypatch.undo()


def test_stale_peft_hooks_are_ignored_on_the_direct_path(tiny_adapters) -> None:
    """PEFT 0.21 can leave its adapter_names hooks behind after a forward pass that raised; a
    later call must not pick up their (stale, wrong-length) names."""
    model = _registry(tiny_adapters, "fp32").loaded.model
    uniform_rows.install(model)
    ids = torch.randint(3, 200, (2, 5))

    def stale(module, args, kwargs):
        kwargs["adapter_names"] = ["a0", "a1", "a0"]  # three names for two rows
        return args, kwargs

    with torch.inference_mode():
        with one_adapter("a1"):
            clean = model(input_ids=ids).logits
        handles = [
            m.register_forward_pre_hook(functools.partial(stale), with_kwargs=True)
            for m in model.modules()
            if isinstance(m, UniformRowsLinear)
        ]
        try:
            with one_adapter("a1"):
                assert torch.equal(model(input_ids=ids).logits, clean)
        finally:
            for handle in handles:
                handle.remove()


def test_a_lora_layer_of_another_kind_keeps_the_per_row_path(tmp_path) -> None:
    """An adapter on the embeddings adds a LoRA layer the direct path does not cover: install()
    says so, and generation with per-row names still works."""
    path = make_random_adapter(
        "random:tiny-llama", tmp_path / "emb", target_modules=["embed_tokens", "q_proj"]
    )
    loaded = load_model("random:tiny-llama", dtype="fp32", adapter=str(path))
    assert not uniform_rows.install(loaded.model)
    ids = loaded.kind.encode_prompts(loaded.tokenizer, [DIALOGUES[0]])
    result = generate_ids(
        loaded, ids, GenerationSettings(max_new_tokens=3), progress=False, adapter_names=["default"]
    )
    assert result.texts and isinstance(result.texts[0], str)


def test_the_engine_rechecks_the_layers_only_when_the_adapters_change(
    tiny_adapters, tmp_path, monkeypatch
) -> None:
    """A server's engine lives across adapter loads: an adapter the direct path does not cover,
    loaded between two steps, must switch it off; the module walk is not redone every step."""
    from dialogtune.generation.engine import RaggedEngine

    model = _registry(tiny_adapters, "fp32").loaded.model
    walks = []
    install = uniform_rows.install
    monkeypatch.setattr(uniform_rows, "install", lambda m: walks.append(1) or install(m))
    engine = RaggedEngine(model, [0], slots=2, per_row_adapters=True)
    assert engine._direct_path() and engine._direct_path() and len(walks) == 1
    emb = make_random_adapter("random:tiny-llama", tmp_path / "emb", target_modules=["embed_tokens"])
    # Replaced under the same name (the registry's unload + load): a new config object, re-walked.
    model.delete_adapter("a1")
    model.load_adapter(str(emb), adapter_name="a1")
    assert not engine._direct_path() and len(walks) == 2
    assert not engine._direct_path() and len(walks) == 2  # unchanged since: no walk
