"""Running a :class:`~dialogtune.serving.openai.decode.Plan` and answering it, whole or streamed.

* Decoder-only models join the server's continuous batch (:class:`ContinuousBatcher`), with a
  stop check that ends a row on the model thread as soon as a stop string appears, and a
  token stream when the client streams. A client that leaves a stream cancels its request:
  its rows end at their next token.
* Encoder-decoder models (T5, BART) run through transformers' ``generate`` on the model
  thread, between micro-batches, one prompt at a time; a streamed answer arrives in one piece.
* :class:`~dialogtune.serving.openai.text.TextStream` turns tokens into text for streamed and
  whole answers alike, so both are the same text.
* Streams are server-sent events as OpenAI sends them: for chat a first chunk with the role,
  a chunk per piece of text, one per choice with its ``finish_reason``, the ``usage`` when
  ``stream_options.include_usage``, then ``data: [DONE]``. An error after the response has
  started is an ``{"error": ...}`` event (the ``openai`` client raises it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from dialogtune.errors import ModelSpecError
from dialogtune.generation import GenerationSettings
from dialogtune.serving.batcher import BatcherBusy, BatcherClosed
from dialogtune.serving.continuous import Completion as EngineCompletion
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.openai.decode import Plan, RequestDecoder
from dialogtune.serving.openai.errors import OpenAIError, error_body
from dialogtune.serving.openai.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatResponseMessage,
    Completion,
    CompletionChoice,
    Usage,
)
from dialogtune.serving.openai.text import TextStream, stop_check

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A plan handed to the model thread: its task, and its token stream when streaming."""

    task: asyncio.Future[Any]
    queue: asyncio.Queue[tuple[int, int]] | None


@dataclass
class Choice:
    text: str
    finish_reason: str
    tokens: int


class Responder:
    """Runs plans on the server's batcher and encodes the answers."""

    def __init__(self, service: Any, decoder: RequestDecoder) -> None:  # service: app.SummarizeService
        from dialogtune.generation import stop_ids

        self.service = service
        self.registry = service.registry
        self.tokenizer = decoder.tokenizer  # the event loop's copy
        self.continuous = decoder.continuous
        self.stop_ids = stop_ids(self.registry.loaded)

    async def start(self, plan: Plan) -> Job:
        """Hand the request to the model thread. Call it in the same event-loop step as ``resolve``:
        counting the adapter as used then keeps an unload from coming in between."""
        service, batcher = self.service, self.service.batcher
        if batcher.closing:
            raise OpenAIError(503, "the server is shutting down", headers={"Retry-After": "5"})
        queue: asyncio.Queue[tuple[int, int]] | None = None
        if isinstance(batcher, ContinuousBatcher):
            queue = asyncio.Queue() if plan.stream else None
            stop = stop_check(self.registry.loaded.tokenizer, plan.stops)  # runs on the model thread
            work = batcher.complete(plan.prompts, plan.adapter, plan.settings, stream=queue, stop=stop)
        else:
            work = batcher.run_exclusive(self._generate, plan.prompts, plan.adapter, plan.settings)
        service.adapter_users[plan.adapter] += 1
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda _: service.adapter_users.subtract([plan.adapter]))
        try:
            await asyncio.sleep(0)  # the batcher takes the job now, or refuses it (busy, shutting down)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            await self._result(task)
        return Job(task, queue)

    def _generate(
        self, prompts: list[list[int]], adapter: str | None, settings: GenerationSettings
    ) -> list[tuple[str, int]]:
        """Encoder-decoder models, on the model thread: (text, generated tokens) per prompt."""
        from dialogtune.generation import generate_ids

        names = self.registry.adapter_names([adapter])
        results = []
        for ids in prompts:  # one at a time: exact token counts per choice
            result = generate_ids(self.registry.loaded, [ids], settings, progress=False, adapter_names=names)
            results.append((result.texts[0], result.generated_tokens))
        return results

    async def _result(self, task: asyncio.Future[Any]) -> Any:
        try:
            return await task
        except BatcherBusy as exc:
            raise OpenAIError(503, f"server busy: {exc}", headers={"Retry-After": "1"}) from exc
        except BatcherClosed as exc:
            raise OpenAIError(503, str(exc), headers={"Retry-After": "5"}) from exc
        except ModelSpecError as exc:  # an adapter that went away between the checks
            raise OpenAIError(404, str(exc), param="model", code="model_not_found") from exc
        except Exception as exc:
            log.exception("generation failed")
            await self.service.check_after_failure(exc)
            raise OpenAIError(500, "generation failed; see the server log") from exc

    async def pieces(self, plan: Plan, job: Job) -> AsyncIterator[tuple[int, str] | list[Choice]]:
        """``(choice, text)`` as text becomes final, then the list of choices."""
        streams = [TextStream(self.tokenizer, plan.stops, strip=plan.strip) for _ in plan.prompts]
        if job.queue is not None:
            async for row, token in _drain(job.queue, job.task):
                if token not in self.stop_ids:
                    piece = streams[row].push(token)
                    if piece:
                        yield row, piece
        results = await self._result(job.task)
        choices = []
        for row, result in enumerate(results):
            if isinstance(result, EngineCompletion):
                stream = streams[row]
                if job.queue is None:
                    for token in result.tokens:
                        if token not in self.stop_ids:
                            stream.push(token)
                piece = stream.finish()
                reason = "stop" if stream.stopped else result.finish_reason
                choice = Choice(stream.released, reason, len(result.tokens))
            else:  # generate's (stripped) text and token count
                text, used = result
                piece, stopped = _cut(text, plan.stops, strip=plan.strip)
                reason = "stop" if stopped or used < plan.settings.max_new_tokens else "length"
                choice = Choice(piece, reason, used)
            if piece:
                yield row, piece
            choices.append(choice)
        yield choices

    def usage(self, plan: Plan, choices: list[Choice]) -> Usage:
        prompt = sum(len(ids) for ids in plan.prompts)
        completion = sum(c.tokens for c in choices)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def respond(self, plan: Plan, request_id: str) -> Any:
        job = await self.start(plan)
        response_id = ("chatcmpl-" if plan.chat else "cmpl-") + request_id
        if plan.stream:
            return StreamingResponse(
                self._events(plan, job, response_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        choices: list[Choice] = []
        try:
            async for item in self.pieces(plan, job):
                if isinstance(item, list):
                    choices = item
        finally:
            job.task.cancel()  # only if the request was cancelled: its rows end at their next token
        usage, created = self.usage(plan, choices), int(time.time())
        if plan.chat:
            return ChatCompletion(
                id=response_id,
                created=created,
                model=plan.model,
                choices=[
                    ChatChoice(
                        index=i, message=ChatResponseMessage(content=c.text), finish_reason=c.finish_reason
                    )
                    for i, c in enumerate(choices)
                ],
                usage=usage,
            )
        return Completion(
            id=response_id,
            created=created,
            model=plan.model,
            choices=[
                CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason)
                for i, c in enumerate(choices)
            ],
            usage=usage,
        )

    async def _events(self, plan: Plan, job: Job, response_id: str) -> AsyncIterator[str]:
        """Server-sent events: a chunk per piece of text, one with each finish reason, the usage if
        asked, then ``data: [DONE]``. An error after the first chunk is an ``{"error": ...}`` event."""
        head = {
            "id": response_id,
            "object": "chat.completion.chunk" if plan.chat else "text_completion",
            "created": int(time.time()),
            "model": plan.model,
        }

        def event(choices: list[dict[str, Any]], usage: Usage | None = None) -> str:
            body: dict[str, Any] = {**head, "choices": choices}
            if plan.include_usage:
                body["usage"] = usage.model_dump() if usage is not None else None
            return f"data: {json.dumps(body)}\n\n"

        def choice(row: int, text: str | None, reason: str | None) -> dict[str, Any]:
            if plan.chat:
                delta = {} if text is None else {"content": text}
                return {"index": row, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {"index": row, "text": text or "", "logprobs": None, "finish_reason": reason}

        try:
            if plan.chat:  # OpenAI's first chunk names the role
                yield event(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        for i in range(len(plan.prompts))
                    ]
                )
            choices: list[Choice] = []
            async for item in self.pieces(plan, job):
                if isinstance(item, list):
                    choices = item
                else:
                    yield event([choice(item[0], item[1], None)])
            for row, done in enumerate(choices):
                yield event([choice(row, None, done.finish_reason)])
            if plan.include_usage:
                yield event([], self.usage(plan, choices))
        except OpenAIError as exc:
            body = error_body(exc.status, exc.message, param=exc.param, code=exc.code)
            yield f"data: {json.dumps(body)}\n\n"
        finally:
            job.task.cancel()  # a client that left: its rows end at their next token
        yield "data: [DONE]\n\n"


async def _drain(
    queue: asyncio.Queue[tuple[int, int]], task: asyncio.Future[Any]
) -> AsyncIterator[tuple[int, int]]:
    """Items of ``queue`` until ``task`` is done and the queue empty.

    The model thread puts every token on the loop before it settles the request, so once the
    task is done no token is still on its way.
    """
    while True:
        if not queue.empty():
            yield queue.get_nowait()
            continue
        if task.done():
            return
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()


def _cut(text: str, stops: Sequence[str], *, strip: bool) -> tuple[str, bool]:
    """``text`` up to its first stop string (stripped in summarize mode), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    return (text.strip() if strip else text), cut >= 0
