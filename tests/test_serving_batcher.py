"""The micro-batcher with a fake model: grouping, limits, draining, errors, one model thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dialogtune.generation import GenerationSettings
from dialogtune.serving.batcher import BatcherBusy, BatcherClosed, MicroBatcher

GREEDY = GenerationSettings(max_new_tokens=8)
LONGER = GenerationSettings(max_new_tokens=16)


class FakeModel:
    """Echoes ``adapter:dialogue`` and records every call and the thread it ran on."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], list[str | None], int]] = []
        self.threads: set[int] = set()
        self.delay = delay
        self.fail_on = fail_on
        self.running = 0
        self.max_running = 0

    def __call__(self, dialogues, adapters, settings):
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.threads.add(threading.get_ident())
        self.calls.append((list(dialogues), list(adapters), settings.max_new_tokens))
        time.sleep(self.delay)
        self.running -= 1
        if self.fail_on in dialogues:
            raise RuntimeError("model exploded")
        return [f"{a}:{d}" for d, a in zip(dialogues, adapters)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_concurrent_jobs_share_batches_and_keep_their_order():
    model = FakeModel(delay=0.05)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=0.05)
        jobs = [
            batcher.submit([f"d{i}a", f"d{i}b"], f"ad{i % 3}" if i % 3 else None, GREEDY) for i in range(6)
        ]
        results = await asyncio.gather(*jobs)
        await batcher.close()
        return batcher, results

    batcher, results = run(main())
    for i, texts in enumerate(results):
        adapter = f"ad{i % 3}" if i % 3 else None
        assert texts == [f"{adapter}:d{i}a", f"{adapter}:d{i}b"]
    assert [len(call[0]) for call in model.calls] == [4, 4, 4]  # 12 dialogues, batches of 4
    assert any(len(set(call[1])) > 1 for call in model.calls)  # adapters mixed in one call
    assert len(model.threads) == 1 and model.max_running == 1  # one model thread, never two batches at once
    assert batcher.stats.batches == 3 and batcher.stats.dialogues == 12


def test_groups_by_settings_and_optionally_by_adapter():
    async def main(mixed):
        model = FakeModel()
        batcher = MicroBatcher(model, max_batch_size=16, max_wait_s=0.05, mixed_adapters=mixed)
        await asyncio.gather(
            batcher.submit(["a"], None, GREEDY),
            batcher.submit(["b"], "x", GREEDY),
            batcher.submit(["c"], "x", LONGER),
            batcher.submit(["d"], None, GREEDY),
        )
        await batcher.close()
        return sorted((tuple(c[0]), c[2]) for c in model.calls)

    assert run(main(True)) == [(("a", "b", "d"), 8), (("c",), 16)]
    assert run(main(False)) == [(("a", "d"), 8), (("b",), 8), (("c",), 16)]


def test_max_batch_one_is_strictly_sequential():
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_s=0.01)
        await asyncio.gather(*(batcher.submit([f"d{i}"], None, GREEDY) for i in range(5)))
        await batcher.close()

    run(main())
    assert [c[0] for c in model.calls] == [[f"d{i}"] for i in range(5)]


def test_close_finishes_queued_jobs_then_refuses_new_ones():
    model = FakeModel(delay=0.05)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=2, max_wait_s=0.0)
        pending = [asyncio.ensure_future(batcher.submit([f"d{i}"], None, GREEDY)) for i in range(6)]
        await asyncio.sleep(0.01)  # the first batch is running, the rest are queued
        await batcher.close()
        assert all(job.done() for job in pending)
        with pytest.raises(BatcherClosed):
            await batcher.submit(["late"], None, GREEDY)
        return [job.result() for job in pending]

    assert run(main()) == [[f"None:d{i}"] for i in range(6)]


def test_full_queue_is_busy_and_a_failing_batch_fails_only_its_requests():
    model = FakeModel(delay=0.05, fail_on="boom")

    async def main():
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_s=0.0, max_queued=3)
        first = asyncio.ensure_future(batcher.submit(["boom"], None, GREEDY))
        await asyncio.sleep(0.01)  # "boom" is running, the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit([f"d{i}"], None, GREEDY)) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(BatcherBusy):
            await batcher.submit(["one too many"], None, GREEDY)
        with pytest.raises(RuntimeError, match="exploded"):
            await first
        results = await asyncio.gather(*queued)
        await batcher.close()
        return results

    assert run(main()) == [["None:d0"], ["None:d1"], ["None:d2"]]


def test_run_exclusive_never_overlaps_a_batch():
    model = FakeModel(delay=0.05)
    seen = []

    def change_model():
        seen.append(model.running)  # 0: no batch is running while the model changes
        return "done"

    async def main():
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_s=0.0)
        jobs = [asyncio.ensure_future(batcher.submit([f"d{i}"], None, GREEDY)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert await batcher.run_exclusive(change_model) == "done"
        await asyncio.gather(*jobs)
        await batcher.close()

    run(main())
    assert seen == [0]
