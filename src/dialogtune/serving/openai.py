"""OpenAI-compatible routes on ``dialogtune serve``, so that OpenAI and vLLM clients work unchanged.

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming as
server-sent events), and vLLM's adapter admin routes ``POST /v1/load_lora_adapter`` /
``POST /v1/unload_lora_adapter``. ``model`` names an adapter or the base model. Errors are
in OpenAI's shape (:mod:`~dialogtune.serving.openai_errors`). See docs/serving.md.

A request is decoded (model → adapter; options → :class:`GenerationSettings`; messages or
prompt → token ids; the server's limits), run, and encoded:

* **prompts**: chat messages go through the model's chat template as vLLM renders them
  (``apply_chat_template(messages, add_generation_prompt=True)``); with
  ``"dialogtune": {"summarize": true}`` the last user message is the dialogue, wrapped in the
  server's summarization prompt (the adapter's saved training prompt), token for token what
  ``/v1/summarize`` runs. ``/v1/completions`` takes text or token ids.
* **running**: decoder-only models join the continuous batch, with a stop check that ends a
  row on the model thread once a stop string appears, and a token stream when the client
  streams. Encoder-decoder models (T5, BART) run through transformers' ``generate`` on the
  model thread, between micro-batches; their streamed answers arrive in one piece.
* **text**: :class:`~dialogtune.serving.detokenize.TextStream` turns tokens into text for
  streamed and whole answers alike, so both are the same text.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import StreamingResponse

from dialogtune.errors import DialogtuneError, ModelSpecError
from dialogtune.generation import GenerationSettings
from dialogtune.serving import admin
from dialogtune.serving.batcher import BatcherBusy, BatcherClosed
from dialogtune.serving.continuous import Completion as EngineCompletion
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.detokenize import TextStream, stop_check
from dialogtune.serving.openai_errors import OpenAIError, OpenAIRoute, error_body, install_router_errors
from dialogtune.serving.openai_schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ChatResponseMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    LoadLoraAdapterRequest,
    LoraAdapterResponse,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    SamplingFields,
    UnloadLoraAdapterRequest,
    Usage,
)

log = logging.getLogger(__name__)
_SAMPLING_EPS = 1e-5


@dataclass
class _Plan:
    """A request that passed every check, ready to run."""

    chat: bool
    model: str  # as the client named it, echoed back
    adapter: str | None
    prompts: list[list[int]]
    settings: GenerationSettings
    stops: list[str]
    strip: bool  # summarize mode: the text exactly as /v1/summarize returns it
    stream: bool
    include_usage: bool


@dataclass
class _Job:
    task: asyncio.Future[Any]
    queue: asyncio.Queue[tuple[int, int]] | None


@dataclass
class _Choice:
    text: str
    finish_reason: str
    tokens: int


def _error(description: str) -> dict[str, Any]:
    return {"model": OpenAIErrorResponse, "description": description}


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class OpenAIService:
    """Decode → run → encode for the OpenAI routes, over the server's registry and batcher."""

    def __init__(self, service: Any) -> None:  # service: app.SummarizeService
        self.service = service
        self.registry = service.registry
        self.config = service.config
        # Prompts are rendered and tokenized on the event loop, decoded text too: with a copy of
        # the tokenizer of its own (the model thread keeps the original).
        self.tokenizer = copy.deepcopy(self.registry.loaded.tokenizer)
        self.vocab = self.registry.loaded.model.get_input_embeddings().num_embeddings
        from dialogtune.generation import stop_ids

        self.stop_ids = stop_ids(self.registry.loaded)
        self.started = int(time.time())

    @property
    def continuous(self) -> bool:
        return isinstance(self.service.batcher, ContinuousBatcher)

    # ---- decode ---------------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        registry = self.registry
        if registry.merged is not None:  # only the merged adapter is served
            return [registry.merged]
        return [registry.model_name, *registry.infos]

    def resolve(self, name: str) -> str | None:
        """The adapter ``name`` asks for (None: the base model)."""
        registry = self.registry
        if registry.merged is not None:
            if name == registry.merged:
                return name
        elif name in registry:
            return name
        elif name == registry.model_name:
            return None
        raise OpenAIError(
            404,
            f"the model '{name}' does not exist; this server serves {', '.join(self.model_ids())}",
            param="model",
            code="model_not_found",
        )

    def settings(self, body: SamplingFields, max_tokens: int | None, summarize: bool) -> GenerationSettings:
        cfg = self.config
        if (body.n or 1) != 1:
            raise OpenAIError(400, f"n={body.n}: only n=1 is supported (one choice per prompt)", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise OpenAIError(400, f"{name} is not supported (only 0)", param=name)
        if max_tokens is not None and max_tokens > cfg.max_new_tokens_limit:
            raise OpenAIError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {cfg.max_new_tokens_limit}",
                param="max_tokens",
            )
        # OpenAI's default temperature is 1 (sampling); the summarize mode keeps /v1/summarize's
        # default, greedy.
        temperature = body.temperature if body.temperature is not None else (0.0 if summarize else 1.0)
        sample = temperature >= _SAMPLING_EPS  # below it, logits / temperature overflow: greedy, as in vLLM
        return GenerationSettings(
            max_new_tokens=max_tokens or cfg.default_max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            top_k=body.top_k if body.top_k is not None and body.top_k > 0 else 0,
            repetition_penalty=body.repetition_penalty if body.repetition_penalty is not None else 1.0,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
            batch_size=cfg.max_batch_size,
            max_dialogue_tokens=cfg.max_dialogue_tokens,
            engine="auto" if self.continuous else "generate",
        )

    def summarize_prompt(self, messages: Sequence[ChatMessage], adapter: str | None) -> list[int]:
        """The last user message as a dialogue in the server's prompt, with /v1/summarize's limits."""
        cfg = self.config
        dialogue = next((m.text() for m in reversed(messages) if m.role == "user"), None)
        if dialogue is None:
            raise OpenAIError(
                400,
                "dialogtune.summarize takes the last user message as the dialogue; there is none",
                param="messages",
            )
        if not dialogue.strip():
            raise OpenAIError(400, "the last user message (the dialogue) is empty", param="messages")
        if len(dialogue) > cfg.max_dialogue_chars:
            raise OpenAIError(
                413,
                f"the dialogue has {len(dialogue)} characters; this server accepts at most "
                f"{cfg.max_dialogue_chars}",
                param="messages",
            )
        tokens = len(self.tokenizer(dialogue, add_special_tokens=False)["input_ids"])
        if tokens > cfg.max_dialogue_tokens:
            raise OpenAIError(
                413,
                f"the dialogue has {tokens} tokens; this server accepts at most {cfg.max_dialogue_tokens}",
                param="messages",
            )
        settings = GenerationSettings(max_dialogue_tokens=cfg.max_dialogue_tokens)
        try:
            return self.registry.prompt_ids(self.tokenizer, [dialogue], adapter, settings, cfg.template)[0]
        except DialogtuneError as exc:
            raise OpenAIError(400, str(exc), param="messages") from exc

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The messages through the model's chat template, as vLLM renders them."""
        cfg = self.config
        if not getattr(self.tokenizer, "chat_template", None):
            raise OpenAIError(
                400,
                "this model has no chat template; send a prompt to /v1/completions, or add "
                '"dialogtune": {"summarize": true} to summarize the last user message',
                param="messages",
            )
        chars = sum(len(m.text()) for m in messages)
        if chars > cfg.max_dialogue_chars:
            raise OpenAIError(
                413,
                f"the messages hold {chars} characters; this server accepts at most {cfg.max_dialogue_chars}",
                param="messages",
            )
        rendered = [
            {"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})} for m in messages
        ]
        try:
            text = self.tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # e.g. a template that refuses a system message
            raise OpenAIError(
                400, f"the model's chat template refused these messages: {_first_line(exc)}", param="messages"
            ) from exc
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompts(self, body: CompletionRequest) -> list[list[int]]:
        cfg = self.config
        prompts = body.prompts()
        if len(prompts) > cfg.max_dialogues_per_request:
            raise OpenAIError(
                413,
                f"{len(prompts)} prompts in one request; this server accepts at most "
                f"{cfg.max_dialogues_per_request}",
                param="prompt",
            )
        encoded = []
        for prompt in prompts:
            if isinstance(prompt, str):
                if len(prompt) > cfg.max_dialogue_chars:
                    raise OpenAIError(
                        413,
                        f"a prompt has {len(prompt)} characters; this server accepts at most "
                        f"{cfg.max_dialogue_chars}",
                        param="prompt",
                    )
                # As dialogtune encodes its own prompts: the tokenizer's BOS, never a trailing EOS
                # for decoder-only models; T5's EOS for encoder-decoder ones.
                encoded.append(self.registry.loaded.kind.encode_prompts(self.tokenizer, [prompt])[0])
            else:
                bad = next((t for t in prompt if t >= self.vocab), None)
                if bad is not None:
                    raise OpenAIError(
                        400,
                        f"token id {bad} is not in this model's vocabulary ({self.vocab} tokens)",
                        param="prompt",
                    )
                encoded.append(list(prompt))
        return encoded

    def check_size(self, prompts: list[list[int]], settings: GenerationSettings) -> None:
        cfg = self.config
        for ids in prompts:
            if len(ids) > cfg.max_prompt_tokens:
                raise OpenAIError(
                    413,
                    f"the prompt has {len(ids)} tokens; this server accepts at most {cfg.max_prompt_tokens}",
                    code="context_length_exceeded",
                )
        steps = settings.max_new_tokens  # as /v1/summarize's cost, with one beam
        cost = steps * sum(len(ids) + steps for ids in prompts)
        if cost > cfg.max_request_cost:
            raise OpenAIError(
                413,
                f"this request costs {cost} token-steps (max_tokens {steps} × prompt plus completion tokens); "
                f"this server's max_request_cost is {cfg.max_request_cost}",
            )

    def decode_chat(self, body: ChatCompletionRequest) -> _Plan:
        summarize = bool(body.dialogtune and body.dialogtune.summarize)
        adapter = self.resolve(body.model)
        if body.logprobs:
            raise OpenAIError(400, "logprobs are not supported", param="logprobs")
        if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
            raise OpenAIError(
                400, "max_tokens and max_completion_tokens differ; give one", param="max_tokens"
            )
        settings = self.settings(body, body.max_completion_tokens or body.max_tokens, summarize)
        prompt = (
            self.summarize_prompt(body.messages, adapter) if summarize else self.chat_prompt(body.messages)
        )
        return self._plan(body, True, adapter, [prompt], settings, summarize)

    def decode_text(self, body: CompletionRequest) -> _Plan:
        adapter = self.resolve(body.model)
        if body.echo:
            raise OpenAIError(400, "echo is not supported", param="echo")
        if body.logprobs is not None:
            raise OpenAIError(400, "logprobs are not supported", param="logprobs")
        settings = self.settings(body, body.max_tokens, False)
        return self._plan(body, False, adapter, self.text_prompts(body), settings, False)

    def _plan(
        self,
        body: SamplingFields,
        chat: bool,
        adapter: str | None,
        prompts: list[list[int]],
        settings: GenerationSettings,
        strip: bool,
    ) -> _Plan:
        self.check_size(prompts, settings)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _Plan(
            chat,
            body.model,
            adapter,
            prompts,
            settings,
            body.stops(),
            strip,
            bool(body.stream),
            include_usage,
        )

    # ---- run ------------------------------------------------------------------------------------

    async def start(self, plan: _Plan) -> _Job:
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
        await asyncio.sleep(0)  # the batcher takes the job now, or refuses it (busy, shutting down)
        if task.done():
            await self._result(task)
        return _Job(task, queue)

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

    async def pieces(self, plan: _Plan, job: _Job) -> AsyncIterator[tuple[int, str] | list[_Choice]]:
        """``(choice, text)`` as text becomes final (streaming only), then the list of choices."""
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
                choice = _Choice(stream.released, reason, len(result.tokens))
            else:  # generate's (stripped) text and token count
                text, used = result
                piece, stopped = _cut(text, plan.stops, strip=plan.strip)
                reason = "stop" if stopped or used < plan.settings.max_new_tokens else "length"
                choice = _Choice(piece, reason, used)
            if piece:
                yield row, piece
            choices.append(choice)
        yield choices

    # ---- encode ---------------------------------------------------------------------------------

    def usage(self, plan: _Plan, choices: list[_Choice]) -> Usage:
        prompt = sum(len(ids) for ids in plan.prompts)
        completion = sum(c.tokens for c in choices)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def respond(self, plan: _Plan, request_id: str) -> Any:
        job = await self.start(plan)
        response_id = ("chatcmpl-" if plan.chat else "cmpl-") + request_id
        if plan.stream:
            return StreamingResponse(
                self._events(plan, job, response_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        choices: list[_Choice] = []
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

    async def _events(self, plan: _Plan, job: _Job, response_id: str) -> AsyncIterator[str]:
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
            choices: list[_Choice] = []
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

    def models(self) -> ModelList:
        registry, cfg = self.registry, self.config
        longest = cfg.max_prompt_tokens + cfg.max_new_tokens_limit
        base = registry.model_name
        cards = []
        if registry.merged is None:
            cards.append(
                ModelCard(id=base, created=self.started, root=base, parent=None, max_model_len=longest)
            )
        for name, info in list(registry.infos.items()):
            cards.append(
                ModelCard(id=name, created=self.started, root=info.path, parent=base, max_model_len=longest)
            )
        return ModelList(data=cards)


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


def install_openai_routes(
    app: FastAPI, service: Any, *, guarded: list[Depends], admin_only: list[Depends]
) -> None:
    """Add the OpenAI-compatible routes to ``app`` (``guarded``/``admin_only``: the auth dependencies)."""
    api = OpenAIService(service)
    app.state.openai = api
    router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
    config = service.config
    auth = {401: _error("missing or wrong bearer token")} if config.api_token else {}
    common = {
        **auth,
        400: _error("invalid request: a bad or unsupported field (param names it), n other than 1"),
        404: _error("unknown model (GET /v1/models lists them)"),
        408: _error("body not received within body_timeout_s"),
        413: _error("body, prompt, dialogue or cost over this server's limits"),
        503: _error("busy or shutting down; retry later (Retry-After)"),
    }
    stream = {
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events with stream"}
    }

    @router.get("/v1/models", response_model=ModelList, dependencies=guarded, responses=auth)
    async def models() -> ModelList:
        return api.models()

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        dependencies=guarded,
        responses={**stream, **common},
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        plan = api.decode_chat(body)
        request.state.adapter, request.state.n_dialogues = plan.adapter, len(plan.prompts)
        return await api.respond(plan, request.state.request_id)

    @router.post(
        "/v1/completions", response_model=Completion, dependencies=guarded, responses={**stream, **common}
    )
    async def completions(body: CompletionRequest, request: Request) -> Any:
        plan = api.decode_text(body)
        request.state.adapter, request.state.n_dialogues = plan.adapter, len(plan.prompts)
        return await api.respond(plan, request.state.request_id)

    admin_errors = {
        401: _error("missing or wrong bearer token"),
        403: _error("admin disabled (no token), or a path outside the adapter root"),
        408: _error("body not received within body_timeout_s"),
        503: _error("too many requests in progress, or shutting down; retry later"),
    }

    @router.post(
        "/v1/load_lora_adapter",
        response_model=LoraAdapterResponse,
        dependencies=admin_only,
        responses={
            **admin_errors,
            400: _error("not a usable adapter"),
            409: _error("name taken, or max_adapters reached"),
        },
    )
    async def load_lora_adapter(body: LoadLoraAdapterRequest, request: Request) -> LoraAdapterResponse:
        request.state.adapter = body.lora_name
        info = await admin.load_adapter(service, body.lora_name, body.lora_path)
        return LoraAdapterResponse(
            message=f"Success: LoRA adapter '{body.lora_name}' added successfully.", adapter=info
        )

    @router.post(
        "/v1/unload_lora_adapter",
        response_model=LoraAdapterResponse,
        dependencies=admin_only,
        responses={
            **admin_errors,
            404: _error("no adapter of that name is loaded"),
            409: _error("requests in progress use it (retry), or the server serves a merged adapter"),
        },
    )
    async def unload_lora_adapter(body: UnloadLoraAdapterRequest, request: Request) -> LoraAdapterResponse:
        request.state.adapter = body.lora_name
        await admin.unload_adapter(service, body.lora_name)
        return LoraAdapterResponse(message=f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    app.include_router(router)
    install_router_errors(app)
    _advertise_limits(app, config.max_new_tokens_limit)


def _advertise_limits(app: FastAPI, max_new_tokens: int) -> None:
    """The schema's ``max_tokens`` maximum is this server's limit, as for /v1/summarize."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            parts = build().get("components", {}).get("schemas", {})
            for name, part in parts.items():
                if name.startswith(("ChatCompletionRequest", "CompletionRequest")):
                    for key in ("max_tokens", "max_completion_tokens"):
                        prop = part.get("properties", {}).get(key, {})
                        for alternative in prop.get("anyOf", [prop]):
                            if "maximum" in alternative:
                                alternative["maximum"] = max_new_tokens
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
