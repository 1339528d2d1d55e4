"""Continuous batching for the server: requests join the running batch between decode steps.

A model thread runs the ragged engine (:mod:`dialogtune.generation.engine`) over up to
``max_batch_size`` sequences at once. A request arriving while others decode is prefilled
into a free slot before the next step and starts producing tokens at once, instead of
waiting for the whole batch to finish (what a static micro-batcher does); a finished
sequence frees its slot immediately. The engine's outputs do not depend on the batch, so a
response is the same whatever else the server is doing (for the base model and merged adapters
at any precision, and for unmerged adapters whatever the size of the step: their fp32 LoRA products
are padded to a row count whose rounding does not depend on it, models/lora_rows.py).

Work that changes the model (loading an adapter, a self-check) runs on the same thread
between two decode steps (:meth:`run_exclusive`). Beam search, which the engine does not
do, runs there too, through transformers' ``generate``.

Same interface as :class:`~dialogtune.serving.batcher.MicroBatcher`, which encoder-decoder
models (T5, BART) keep using.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dialogtune.errors import ModelSpecError
from dialogtune.generation import GenerationSettings
from dialogtune.serving.batcher import BatcherBusy, BatcherClosed, BatcherStats
from dialogtune.serving.threads import enter_model_thread

log = logging.getLogger(__name__)
T = TypeVar("T")

# (dialogues, adapter, settings) -> prompt token ids, called on the event loop
PromptBuilder = Callable[[Sequence[str], str | None, GenerationSettings], list[list[int]]]
# tokens generated so far -> whether to stop there (e.g. a stop string appeared), on the model thread
StopCheck = Callable[[list[int]], bool]


@dataclass
class Completion:
    """One generated sequence."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token or a stop check) or "length" (max_new_tokens)


@dataclass
class _Job:
    prompts: list[list[int]]
    adapter: str | None
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Completion]]
    stream: asyncio.Queue[tuple[int, int]] | None = None  # (row, token) as they are chosen
    stop: StopCheck | None = None
    results: list[Completion | None] = field(default_factory=list)
    left: int = 0


class ContinuousBatcher:
    """Submits requests to a ragged engine running on one model thread."""

    def __init__(
        self,
        registry: Any,  # AdapterRegistry (its loaded model, adapter names)
        build_prompts: PromptBuilder,
        *,
        max_batch_size: int = 16,
        max_queued: int = 512,
        lookahead: int = 0,
        draft_memory: int = 0,
    ) -> None:
        """``lookahead``: draft tokens per step while few requests decode; ``draft_memory``: recent
        answers drafts may copy from (the engine's, :mod:`dialogtune.generation.lookup`)."""
        self.registry = registry
        self.lookahead = lookahead
        self.draft_memory = draft_memory
        self.build_prompts = build_prompts
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.stats = BatcherStats()
        self._lock = threading.Lock()
        self._inbox: deque[_Job] = deque()
        self._tasks: deque[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._stopped = False
        self._in_flight = 0  # dialogues admitted to the engine and not finished
        self._ids = itertools.count()
        self._rows: dict[int, tuple[_Job, int]] = {}

    # ---- the event loop side ----------------------------------------------------------------------

    @property
    def queued_dialogues(self) -> int:
        with self._lock:
            return sum(len(job.prompts) for job in self._inbox) + self._in_flight

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dialogtune-model", daemon=True)
            self._thread.start()

    async def submit(
        self, dialogues: Sequence[str], adapter: str | None, settings: GenerationSettings
    ) -> list[str]:
        """Summaries for ``dialogues`` (in order), once each has finished."""
        prompts = self.build_prompts(dialogues, adapter, settings)
        return [c.text for c in await self.complete(prompts, adapter, settings)]

    async def complete(
        self,
        prompts: list[list[int]],
        adapter: str | None,
        settings: GenerationSettings,
        stream: asyncio.Queue[tuple[int, int]] | None = None,
        stop: StopCheck | None = None,
    ) -> list[Completion]:
        """Completions of prompt token ids; ``stream`` receives ``(row, token)`` as tokens are chosen;
        a row ends early once ``stop(tokens so far)`` is true (called on the model thread)."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if self.queued_dialogues + len(prompts) > self.max_queued:
            raise BatcherBusy(f"{self.queued_dialogues} dialogues are already waiting; retry shortly")
        self.start()
        loop = asyncio.get_running_loop()
        job = _Job(
            prompts, adapter, settings, loop, loop.create_future(), stream, stop, [None] * len(prompts)
        )
        job.left = len(prompts)
        with self._lock:
            self._inbox.append(job)
        self._wake.set()
        return await job.future

    async def run_exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread between two decode steps."""
        if self._stopped:
            raise RuntimeError("the model thread has stopped")
        self.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._tasks.append((fn, args, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Take no new jobs, finish every admitted and queued one, then stop the model thread."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._stopped = True

    # ---- the model thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        from dialogtune.generation import stop_ids
        from dialogtune.generation.engine import RaggedEngine

        enter_model_thread()  # every core here, none held by the loading thread (serving/threads.py)
        engine: RaggedEngine | None = None
        while True:
            self._wake.wait()
            self._wake.clear()
            self._run_tasks()
            with self._lock:
                idle = not self._inbox and not self._tasks
            if idle:
                if self._closing:
                    return
                continue
            if engine is None:  # kept across idle spells: its cache is allocated once
                engine = RaggedEngine(
                    self.registry.loaded.model,
                    stop_ids(self.registry.loaded),
                    slots=self.max_batch_size,
                    per_row_adapters=True,
                    lookahead=self.lookahead,
                    draft_memory=self.draft_memory,
                )
            try:
                engine.run(
                    [],
                    on_token=self._token,
                    on_done=self._done,
                    admit=functools.partial(self._admit, engine),
                    on_step=self._step,
                )
            except Exception as exc:  # every request in flight learns why; the thread goes on
                log.exception("generation failed")
                self._fail_all(exc)
                engine = None  # start afresh: the cache may hold a half-made step
            self._wake.set()  # look again: work may have arrived while the engine wound down

    def _run_tasks(self) -> None:
        while True:
            with self._lock:
                if not self._tasks:
                    return
                fn, args, future = self._tasks.popleft()
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller
                future.get_loop().call_soon_threadsafe(_settle, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)

    def _admit(self, engine: Any) -> list[Any]:
        """Between two steps: run model work, then hand new requests to the engine."""
        from dialogtune.generation.engine import make_request

        self._run_tasks()
        engine.model = self.registry.loaded.model  # an adapter load may have wrapped the base
        with self._lock:
            jobs = [job for job in self._inbox if not job.future.done()]  # skip clients that left
            self._inbox.clear()
        requests = []
        for job in jobs:
            if job.adapter is not None and job.adapter not in self.registry:  # unloaded since it was asked
                error = ModelSpecError(f"adapter '{job.adapter}' is no longer loaded")
                job.loop.call_soon_threadsafe(_settle, job.future, None, error)
                continue
            if job.settings.num_beams > 1:  # not the engine's: transformers' generate, right here
                self._beam_search(job)
                continue
            for row, prompt in enumerate(job.prompts):
                index = next(self._ids)
                self._rows[index] = (job, row)
                requests.append(
                    make_request(index, prompt, job.settings, self.registry.model_adapter(job.adapter))
                )
        with self._lock:
            self._in_flight += len(requests)
        return requests

    def _step(self, rows: list[Any]) -> None:
        # For /health and tests: a "batch" here is one decode step, its size the rows in it.
        self.stats.record(len(rows))
        adapters = {request.adapter for request in rows}
        if len(adapters) > 1:
            self.stats.mixed_steps += 1

    def _token(self, request: Any, token: int) -> None:
        job, row = self._rows[request.index]
        if job.stream is not None:
            job.loop.call_soon_threadsafe(job.stream.put_nowait, (row, token))
        # A row marked finished here is retired after this step, like one that chose EOS: a
        # stop string appeared, or its client has gone (nobody would read the rest).
        if not request.finished and (
            job.future.done() or (job.stop is not None and job.stop(request.tokens))
        ):
            request.finished = True

    def _done(self, request: Any) -> None:
        job, row = self._rows.pop(request.index)
        tokens = request.tokens[:-1] if request.stopped_by_eos else request.tokens
        text = self.registry.loaded.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        stopped = request.stopped_by_eos or len(request.tokens) < request.max_new_tokens
        reason = "stop" if stopped else "length"
        job.results[row] = Completion(text, list(request.tokens), len(request.prompt), reason)
        job.left -= 1
        with self._lock:
            self._in_flight -= 1
        self.stats.finished += 1
        if job.left == 0:
            job.loop.call_soon_threadsafe(_settle, job.future, job.results, None)

    def uses_adapter(self, name: str) -> bool:
        """Whether a queued or running row uses adapter ``name`` (model thread only: the rows
        change only there, between steps)."""
        with self._lock:
            if any(job.adapter == name for job in self._inbox):
                return True
        return any(job.adapter == name for job, _ in self._rows.values())

    def _beam_search(self, job: _Job) -> None:
        from dialogtune.generation import generate_ids

        try:
            names = self.registry.adapter_names([job.adapter] * len(job.prompts))
            result = generate_ids(
                self.registry.loaded, job.prompts, job.settings, progress=False, adapter_names=names
            )
            completions = [Completion(t, [], len(p), "stop") for t, p in zip(result.texts, job.prompts)]
            job.loop.call_soon_threadsafe(_settle, job.future, completions, None)
        except Exception as exc:
            job.loop.call_soon_threadsafe(_settle, job.future, None, exc)

    def _fail_all(self, exc: BaseException) -> None:
        jobs = {id(job): job for job, _ in self._rows.values()}
        self._rows.clear()
        with self._lock:
            self._in_flight = 0
        for job in jobs.values():
            job.loop.call_soon_threadsafe(_settle, job.future, None, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the client gave up
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
