"""Micro-batching: concurrent requests share one ``generate`` call.

Requests wait in a queue on the event loop. The batch loop takes the oldest request,
waits up to ``max_wait_s`` for more to arrive (or until ``max_batch_size`` dialogues
are waiting), groups what it took by generation settings (and by adapter, unless
adapters may share a batch), and runs one generate per group on the model thread.

While a batch runs, new requests pile up in the queue, so under load batches fill by
themselves; the wait only matters for a request arriving at an idle server.

One thread owns the model: a ``ThreadPoolExecutor`` with a single worker runs every
batch and every model change (:meth:`MicroBatcher.run_exclusive`, e.g. loading an
adapter), one after the other, so nothing mutates the model under a running batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dialogtune.generation import GenerationSettings
from dialogtune.serving.threads import enter_model_thread

log = logging.getLogger(__name__)

T = TypeVar("T")
# (dialogues, adapter per dialogue, settings) -> summaries, run on the model thread
BatchRunner = Callable[[list[str], list[str | None], GenerationSettings], list[str]]


class BatcherBusy(Exception):
    """The queue is full: the client should retry later (HTTP 503)."""


class BatcherClosed(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Job:
    dialogues: list[str]
    adapter: str | None
    settings: GenerationSettings
    future: asyncio.Future[list[str]]


@dataclass
class BatcherStats:
    batches: int = 0  # generate calls (micro-batcher) or decode steps (continuous batcher)
    dialogues: int = 0  # rows over all of them
    largest_batch: int = 0
    finished: int = 0  # dialogues answered (continuous batcher)
    mixed_steps: int = 0  # decode steps whose rows used different adapters (continuous batcher)
    batch_sizes: list[int] = field(default_factory=list, repr=False)

    def record(self, size: int) -> None:
        self.batches += 1
        self.dialogues += size
        self.largest_batch = max(self.largest_batch, size)
        if len(self.batch_sizes) < 10_000:  # bounded: only for tests and benchmarks
            self.batch_sizes.append(size)


def settings_key(settings: GenerationSettings) -> tuple[Any, ...]:
    """Requests can share a generate call only with identical decoding settings."""
    return tuple(sorted((k, v) for k, v in settings.to_dict().items() if k != "batch_size"))


class MicroBatcher:
    """Collects concurrent summarization jobs into batches for one model thread."""

    def __init__(
        self,
        run_batch: BatchRunner,
        *,
        max_batch_size: int = 16,
        max_wait_s: float = 0.01,
        max_queued: int = 512,
        mixed_adapters: bool = True,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self.mixed_adapters = mixed_adapters
        self.stats = BatcherStats()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dialogtune-model", initializer=enter_model_thread
        )
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_dialogues(self) -> int:
        return sum(len(job.dialogues) for job in self._queue)

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        """Start the batch loop on the running event loop (idempotent)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="dialogtune-batcher")

    async def submit(
        self, dialogues: Sequence[str], adapter: str | None, settings: GenerationSettings
    ) -> list[str]:
        """Summaries for ``dialogues`` (in order), once their batch has run."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if self.queued_dialogues + len(dialogues) > self.max_queued:
            raise BatcherBusy(f"{self.queued_dialogues} dialogues are already waiting; retry shortly")
        self.start()  # a client without lifespan events (plain ASGI transports) starts it lazily
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(list(dialogues), adapter, settings, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def run_exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread, between batches (never during one)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Take no new jobs, finish every queued one, then stop the model thread."""
        self._closing = True
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def _wait_for_more(self) -> None:
        # Give requests arriving at about the same time a chance to join the batch.
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while self.queued_dialogues < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The oldest jobs up to ``max_batch_size`` dialogues (always at least one job)."""
        taken = [self._queue.popleft()]
        rows = len(taken[0].dialogues)
        while self._queue and rows + len(self._queue[0].dialogues) <= self.max_batch_size:
            rows += len(self._queue[0].dialogues)
            taken.append(self._queue.popleft())
        return [job for job in taken if not job.future.done()]  # skip jobs whose client gave up

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        groups: dict[tuple[Any, ...], list[_Job]] = {}
        for job in jobs:
            key = settings_key(job.settings)
            if not self.mixed_adapters:
                key = (*key, ("adapter", job.adapter))
            groups.setdefault(key, []).append(job)
        return list(groups.values())

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closing:
                    return  # drained
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait_s > 0:
                await self._wait_for_more()
            for group in self._groups(self._take()):
                await self._run(group)

    async def _run(self, group: list[_Job]) -> None:
        # Clients may have left while an earlier group ran; an adapter only they used may
        # even have been unloaded since.
        group = [job for job in group if not job.future.done()]
        if not group:
            return
        dialogues = [d for job in group for d in job.dialogues]
        adapters = [job.adapter for job in group for _ in job.dialogues]
        settings = group[0].settings
        try:
            texts = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_batch, dialogues, adapters, settings
            )
        except Exception as exc:  # every request of the batch learns why; the loop goes on
            log.exception("batch of %d dialogues failed", len(dialogues))
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.record(len(dialogues))
        start = 0
        for job in group:
            end = start + len(job.dialogues)
            if not job.future.done():
                job.future.set_result(texts[start:end])
            start = end
