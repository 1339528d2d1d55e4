"""Continuous batching in the server: late requests join the running batch, tokens stream,
and a response does not depend on what else the server is generating."""

from __future__ import annotations

import asyncio

import pytest

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.serving import AdapterRegistry
from dialogtune.serving.continuous import ContinuousBatcher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes.",
    "#Person1#: Can I pay by card?\n#Person2#: Of course.",
    "#Person1#: Bye!\n#Person2#: See you.",
]


def make_batcher(precision: str = "fp32", slots: int = 8) -> ContinuousBatcher:
    registry = AdapterRegistry(load_model("random:tiny-llama", dtype=precision))
    template = PromptTemplate()
    return ContinuousBatcher(
        registry,
        lambda dialogues, adapter, settings: registry.prompt_ids(
            registry.loaded.tokenizer, dialogues, adapter, settings, template
        ),
        max_batch_size=slots,
    )


def test_a_late_request_is_answered_before_the_earlier_batch_ends():
    batcher = make_batcher()
    long, short = GenerationSettings(max_new_tokens=400), GenerationSettings(max_new_tokens=3)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(DIALOGUES, None, long))
        while batcher.stats.batches < 5:  # the first batch is decoding
            await asyncio.sleep(0.005)
        late = await batcher.submit(DIALOGUES[:1], None, short)
        steps_when_late_done = batcher.stats.batches
        still_running = not first.done()
        await first
        await batcher.close()
        return late, still_running, steps_when_late_done, first.result()

    late, still_running, steps, first = asyncio.run(scenario())
    assert still_running, "the late request waited for the whole earlier batch"
    assert steps < 400 and batcher.stats.largest_batch == 5  # it joined the running batch
    loaded = batcher.registry.loaded
    assert late == generate(loaded, DIALOGUES[:1], GenerationSettings(max_new_tokens=3)).texts
    assert first == generate(loaded, DIALOGUES, GenerationSettings(max_new_tokens=400)).texts


def test_tokens_stream_as_they_are_chosen():
    batcher = make_batcher()
    settings = GenerationSettings(max_new_tokens=10)

    async def scenario():
        queue: asyncio.Queue = asyncio.Queue()
        prompts = batcher.build_prompts(DIALOGUES[:2], None, settings)
        completions = await batcher.complete(prompts, None, settings, stream=queue)
        await batcher.close()
        streamed: dict[int, list[int]] = {0: [], 1: []}
        while not queue.empty():
            row, token = queue.get_nowait()
            streamed[row].append(token)
        return completions, streamed

    completions, streamed = asyncio.run(scenario())
    assert [c.tokens for c in completions] == [streamed[0], streamed[1]]
    assert all(len(c.tokens) == 10 and c.finish_reason == "length" for c in completions)
    assert all(c.prompt_tokens > 10 for c in completions)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_response_does_not_depend_on_the_other_requests(precision):
    """The same dialogue alone, or among others arriving at other times: the same summary."""
    settings = GenerationSettings(max_new_tokens=16)

    async def alone():
        batcher = make_batcher(precision)
        texts = await batcher.submit(DIALOGUES[1:2], None, settings)
        await batcher.close()
        return texts[0]

    async def crowded():
        batcher = make_batcher(precision, slots=3)
        others = [asyncio.ensure_future(batcher.submit([d], None, settings)) for d in DIALOGUES * 2]
        await asyncio.sleep(0.01)
        mine = await batcher.submit(DIALOGUES[1:2], None, settings)
        await asyncio.gather(*others)
        await batcher.close()
        return mine[0]

    assert asyncio.run(alone()) == asyncio.run(crowded())


def test_close_refuses_new_work_and_finishes_what_was_admitted():
    batcher = make_batcher()
    settings = GenerationSettings(max_new_tokens=20)

    async def scenario():
        pending = asyncio.ensure_future(batcher.submit(DIALOGUES, None, settings))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        from dialogtune.serving.batcher import BatcherClosed

        with pytest.raises(BatcherClosed):
            await batcher.submit(DIALOGUES[:1], None, settings)
        await closing
        return await pending

    assert len(asyncio.run(scenario())) == 4


def test_serve_merged_serves_only_its_adapter_with_the_unmerged_outputs(tmp_path):
    """``serve --merged``: the one adapter folded into the base answers as the adapter does
    unmerged; the base alone and run-time loads are refused with clear errors."""
    from fastapi.testclient import TestClient

    from dialogtune.models.inference import load_for_inference
    from dialogtune.serving import ServingConfig, create_app
    from dialogtune.serving.demo_adapters import make_random_adapter

    adapter = make_random_adapter("random:tiny-llama", tmp_path / "a", seed=3)
    merged = load_for_inference("random:tiny-llama", adapter=str(adapter), precision="fp32", merge="yes")
    assert merged.adapter_merged
    registry = AdapterRegistry(merged, merged="support")
    config = ServingConfig(default_max_new_tokens=12, api_token="a-long-token", adapter_root=tmp_path)
    auth = {"Authorization": "Bearer a-long-token"}
    unmerged = load_model("random:tiny-llama", adapter=str(adapter), dtype="fp32")
    expected = generate(unmerged, DIALOGUES, GenerationSettings(max_new_tokens=12)).texts
    with TestClient(create_app(registry, config)) as client:
        answer = client.post(
            "/v1/summarize", json={"dialogues": DIALOGUES, "adapter": "support"}, headers=auth
        )
        assert answer.status_code == 200 and answer.json()["summaries"] == expected
        base = client.post("/v1/summarize", json={"dialogues": DIALOGUES}, headers=auth)
        assert base.status_code == 404 and "only adapter 'support'" in base.json()["detail"]
        listed = client.get("/v1/adapters", headers=auth).json()["adapters"]
        assert [a["name"] for a in listed] == ["support"]
        load = client.post("/v1/admin/adapters", json={"name": "b", "path": str(adapter)}, headers=auth)
        assert load.status_code in (400, 409) and "merged" in load.json()["detail"]


@pytest.mark.parametrize("memory", [0, 64])
def test_the_server_drafts_from_its_recent_answers(memory):
    """A dialogue answered before is answered the same, in fewer decode steps when the server
    remembers its recent answers (``serving.draft_memory``, on by default)."""
    from fastapi.testclient import TestClient

    from dialogtune.serving import ServingConfig, create_app

    assert ServingConfig().draft_memory > 0 and ServingConfig().lookahead == 3
    registry = AdapterRegistry(load_model("random:tiny-llama", dtype="fp32"))
    config = ServingConfig(default_max_new_tokens=24, draft_memory=memory)
    with TestClient(create_app(registry, config)) as client:
        service = client.app.state.service
        answers, steps = [], []
        for _ in range(2):
            before = service.batcher.stats.batches
            answer = client.post("/v1/summarize", json={"dialogues": DIALOGUES[1:2]})
            assert answer.status_code == 200
            answers.append(answer.json()["summaries"])
            steps.append(service.batcher.stats.batches - before)
    assert answers[0] == answers[1]
    assert service.batcher.draft_memory == memory
    if memory:
        assert steps[1] < steps[0]
    else:
        assert steps[1] == steps[0]
