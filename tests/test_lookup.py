"""Draft tokens from prompt lookup: fewer decode steps, the same tokens to the bit."""

from __future__ import annotations

import pytest
import torch

from dialogtune.errors import ConfigError
from dialogtune.generation import GenerationSettings, build_prompts, lookup
from dialogtune.generation.engine import RaggedEngine, make_request
from dialogtune.models import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.serving.config import ServingConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIALOGUES = [
    "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks.",
    "#Person1#: Could you help me carry these boxes upstairs to the office?\n#Person2#: Sure, give me one.",
    "#Person1#: Lunch?\n#Person2#: Yes.",
    "#Person1#: I lost my keys somewhere in the park this morning.\n#Person2#: Let's go and look.",
    "#Person1#: What time is it?\n#Person2#: Nine.",
]


def test_the_draft_is_what_followed_the_latest_occurrence_of_the_longest_suffix():
    assert lookup.draft([5, 6, 7, 1, 5, 6, 8, 2, 5, 6], 3) == [8, 2, 5]  # latest "5 6", not the first
    assert lookup.draft([1, 2, 3, 9, 9, 2, 3, 4, 4, 1, 2, 3], 2) == [9, 9]  # "1 2 3" beats "2 3"
    assert lookup.draft([4, 7, 1, 2, 7], 5) == [1, 2, 7]  # stops at the sequence's end
    assert lookup.draft([1, 2, 3, 4], 3) == []  # no earlier occurrence
    assert lookup.draft([1, 2, 1], 0) == [] and lookup.draft([1], 2) == []


def _prompts(loaded):
    texts = build_prompts(loaded, DIALOGUES, PromptTemplate(), 1024)
    return loaded.kind.encode_prompts(loaded.tokenizer, texts)


def _run(loaded, prompts, settings, *, slots, lookahead, on_step=None):
    engine = RaggedEngine(loaded.model, {-1}, slots=slots, lookahead=lookahead)
    requests = [make_request(i, p, settings) for i, p in enumerate(prompts)]
    engine.run(requests, on_step=on_step and (lambda rows: on_step(engine)))
    return [r.tokens for r in requests], engine


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(
    "changes",
    [{}, {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}, {"do_sample": True, "seed": 3, "top_k": 20}],
    ids=["greedy", "processors", "sampling"],
)
def test_drafts_change_the_steps_not_the_tokens(precision, changes):
    loaded = load_model("random:tiny-llama", dtype=precision)
    prompts = _prompts(loaded)
    settings = GenerationSettings(max_new_tokens=24, precision=precision, **changes)
    plain, plain_engine = _run(loaded, prompts, settings, slots=1, lookahead=0)
    for slots in (1, 2, 3):
        tokens, engine = _run(loaded, prompts, settings, slots=slots, lookahead=3)
        assert tokens == plain, slots
        if slots == 1:  # a lone sequence always drafts: some guesses were right, steps were saved
            assert engine.accepted > 0 and engine.drafted > engine.accepted
            assert engine.steps == plain_engine.steps - engine.accepted
    assert plain_engine.drafted == 0


def test_rejected_drafts_leave_zeros_behind():
    """The cache's unused tail must stay zero (ragged.py's exactness argument and its slot moves)."""
    loaded = load_model("random:tiny-llama", dtype="fp32")
    checked = []

    def check(engine):
        cache = engine.cache
        for keys, values in cache.allocated():
            for slot, length in enumerate(cache.lengths.tolist()):
                assert not keys[slot, :, length:].any() and not values[slot, :, length:].any()
        checked.append(engine.drafted - engine.accepted)

    _run(loaded, _prompts(loaded), GenerationSettings(max_new_tokens=20), slots=2, lookahead=3, on_step=check)
    assert checked and checked[-1] > 0  # some drafts were rejected, and checked after


def test_drafts_only_while_the_step_is_small(monkeypatch):
    monkeypatch.setattr(lookup, "ROWS", 4)
    loaded = load_model("random:tiny-llama", dtype="fp32")
    engine = RaggedEngine(loaded.model, {-1}, slots=8, lookahead=5)
    settings = GenerationSettings(max_new_tokens=30)
    looping = make_request(0, [7, 8, 9, 7, 8, 9, 7, 8], settings)  # "9 7 8 9 7 8" would come next
    looping.tokens = [9]
    assert engine._drafts([looping]) == [[7, 8, 9]]  # ROWS - 1 = 3 draft rows
    assert engine._drafts([looping] * 2) == [[7, 8], []]
    assert engine._drafts([looping] * lookup.ROWS) == [[]] * lookup.ROWS
    looping.tokens = [9] * 28  # 2 tokens left: a 1-token draft at most
    assert engine._drafts([looping]) == [[9]]
    assert RaggedEngine(loaded.model, {-1}, slots=8)._drafts([looping]) == [[]]  # lookahead 0: off


@pytest.mark.parametrize(
    ("key", "value"), [("lookahead", -1), ("lookahead", 65), ("draft_memory", -1), ("draft_memory", 1025)]
)
def test_bad_draft_settings(key, value):
    with pytest.raises(ConfigError, match=key):
        GenerationSettings(**{key: value})
    with pytest.raises(ConfigError, match=key):
        ServingConfig(**{key: value})


def test_per_row_adapters_with_drafts(tiny_adapters):
    from dialogtune.models.inference import load_for_adapters
    from dialogtune.serving import AdapterRegistry

    registry = AdapterRegistry(load_for_adapters("random:tiny-llama", precision="bf16"))
    for name, path in tiny_adapters.items():
        registry.load(name, path)
    model, prompts = registry.loaded.model, _prompts(registry.loaded)
    settings = GenerationSettings(max_new_tokens=16)
    names = ["a0", None, "a1", "a0", None]

    def run(slots, lookahead):
        engine = RaggedEngine(model, {-1}, slots=slots, per_row_adapters=True, lookahead=lookahead)
        requests = [make_request(i, p, settings, names[i]) for i, p in enumerate(prompts)]
        with torch.inference_mode():
            engine.run(requests)
        return [r.tokens for r in requests], engine

    plain, _ = run(1, 0)
    for slots in (1, 3):
        tokens, engine = run(slots, 3)
        assert tokens == plain and engine.drafted > 0


def test_rows_are_grouped_so_that_slots_are_read_as_views():
    from dialogtune.generation.ragged import row_groups

    def shape(groups):
        return [(a, b, s if isinstance(s, slice) else s.tolist()) for a, b, s in groups]

    assert shape(row_groups([0, 1, 2])) == [(0, 3, slice(0, 3))]  # a plain step: one view
    assert shape(row_groups([0, 0])) == [(0, 1, slice(0, 1)), (1, 2, slice(0, 1))]  # a lone sequence
    # first rows of three sequences, second rows of 0 and 2, third row of 2
    assert shape(row_groups([0, 1, 2, 0, 2, 2])) == [(0, 3, slice(0, 3)), (3, 5, [0, 2]), (5, 6, slice(2, 3))]


def test_recent_outputs_draft_what_followed_the_longest_suffix_in_the_same_group():
    recent = lookup.Recent(outputs=3)
    recent.remember("a", [50, 51, 52], [1, 2, 3, 4, 5])
    recent.remember("b", [50, 51, 52], [1, 2, 9, 9])
    assert recent.draft("a", [7, 1, 2], 2) == [3, 4]  # group a's own output, not b's
    assert recent.draft("b", [7, 1, 2], 3) == [9, 9]  # stops at the output's end
    assert recent.draft("a", [8, 51, 52], 2) == [1, 2]  # the prompt's last tokens are context too
    assert recent.draft("a", [6, 6, 6], 2) == [] and recent.draft(None, [1, 2], 2) == []
    recent.remember("a", [0], [1, 2, 7])  # the latest occurrence wins: "1 2" -> 7
    assert recent.draft("a", [1, 2], 1) == [7] and recent.draft("a", [3], 2) == [4, 5]
    recent.remember("c", [0], [3, 3])  # the window holds 3 outputs: a's first one is gone
    assert recent.draft("a", [3], 2) == [] and recent.draft("a", [1, 2], 1) == [7]
    assert len(recent) == 3 and all(serial >= 1 for serial, _ in recent._index.values())
    assert lookup.Recent(outputs=0).draft("a", [1], 2) == []


def test_own_text_first_then_recent_outputs():
    recent = lookup.Recent(outputs=4)
    recent.remember(None, [0], [4, 5, 6, 7])
    # "4" occurred earlier in the sequence itself: its own continuation, not the memory's
    assert lookup.drafts([[4, 9, 4]], [5], 2, recent, [None]) == [[9, 4]]
    assert lookup.drafts([[1, 2, 4]], [5], 2, recent, [None]) == [[5, 6]]  # no earlier "4": memory
    assert lookup.drafts([[1, 2, 4]], [5], 2, None, [None]) == [[]]


def test_a_memory_of_recent_outputs_saves_steps_not_tokens():
    """The same output with and without the memory; a prompt seen before drafts its whole answer."""
    loaded = load_model("random:tiny-llama", dtype="bf16")
    prompts = _prompts(loaded)
    settings = GenerationSettings(max_new_tokens=24, precision="bf16")

    def run(memory):
        engine = RaggedEngine(loaded.model, {-1}, slots=1, lookahead=3, draft_memory=memory)
        outputs = []
        for i, prompt in enumerate(prompts + prompts):  # every prompt twice, one at a time
            request = make_request(i, prompt, settings)
            engine.run([request])
            outputs.append(request.tokens)
        return outputs, engine

    plain, plain_engine = run(0)
    tokens, engine = run(64)
    assert tokens == plain and tokens[: len(prompts)] == tokens[len(prompts) :]
    assert engine.recent is not None and len(engine.recent) == 2 * len(prompts)
    assert plain_engine.recent is None
    assert engine.accepted > plain_engine.accepted and engine.steps < plain_engine.steps


def test_the_memory_is_kept_per_adapter(tiny_adapters):
    from dialogtune.models.inference import load_for_adapters
    from dialogtune.serving import AdapterRegistry

    registry = AdapterRegistry(load_for_adapters("random:tiny-llama", precision="bf16"))
    for name, path in tiny_adapters.items():
        registry.load(name, path)
    prompts = _prompts(registry.loaded)
    settings = GenerationSettings(max_new_tokens=12)
    engine = RaggedEngine(
        registry.loaded.model, {-1}, slots=2, per_row_adapters=True, lookahead=3, draft_memory=8
    )
    plain = RaggedEngine(registry.loaded.model, {-1}, slots=2, per_row_adapters=True, lookahead=0)
    names = ["a0", None, "a1", "a0", None, "a1"]
    with torch.inference_mode():
        for run_engine in (engine, plain):
            requests = [
                make_request(i, prompts[i % len(prompts)], settings, names[i]) for i in range(len(names))
            ]
            run_engine.run(requests)
            if run_engine is engine:
                with_memory = [r.tokens for r in requests]
    assert with_memory == [r.tokens for r in requests]
    groups = {key[0] for key in engine.recent._index}
    assert groups == {"a0", "a1", None}


def test_the_draft_memory_is_not_part_of_a_runs_identity():
    assert GenerationSettings(draft_memory=0).identity() == GenerationSettings().identity()
    assert "draft_memory" not in GenerationSettings().identity()
