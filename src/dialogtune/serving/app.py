"""The HTTP API: ``create_app(registry, config)`` builds the FastAPI application.

A summarize request goes through three steps, as in litgpt's server:
``decode_request`` (limits, adapter lookup, generation settings), ``predict`` (the
micro-batcher) and ``encode_response``. Routes only wire these to HTTP.

Endpoints: ``POST /v1/summarize``, ``GET /v1/adapters``, ``POST /v1/admin/adapters``
(load an adapter at run time; needs the API token), ``GET /health``, OpenAPI at
``/docs`` and ``/openapi.json``; the OpenAI-compatible routes come from
:mod:`~dialogtune.serving.openai`. See docs/serving.md.

Every error is a JSON ``{"detail": ...}``, also for bodies that are not strict JSON
(``NaN``, ``Infinity``, ``1e999``, lone surrogates: 422) and for unexpected failures (500).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dialogtune import __version__
from dialogtune.errors import ConfigError, ModelSpecError
from dialogtune.generation import GenerationSettings
from dialogtune.generation.engine import supports as supports_continuous
from dialogtune.serving import admin as adapter_admin
from dialogtune.serving.batcher import BatcherBusy, BatcherClosed, MicroBatcher
from dialogtune.serving.config import TOKEN_ENV, ServingConfig
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.middleware import (
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    ConnectionLimitMiddleware,
    RequestGauge,
    RequestLogMiddleware,
    ShutdownMiddleware,
    bearer_token_matches,
)
from dialogtune.serving.openai import install_openai_routes
from dialogtune.serving.registry import AdapterRegistry
from dialogtune.serving.schemas import (
    AdapterInfo,
    AdaptersResponse,
    ErrorResponse,
    GenerationOptions,
    HealthResponse,
    LoadAdapterRequest,
    SummarizeRequest,
    SummarizeResponse,
)
from dialogtune.serving.strict_json import StrictJSONRoute, install_error_handlers

log = logging.getLogger(__name__)

# auto_error=False: a missing header reaches our check, which answers 401 (not 403).
_BEARER = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV}")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


@dataclass
class DecodedRequest:
    """A summarize request that passed every check, ready for the batcher."""

    dialogues: list[str]
    adapter: str | None
    settings: GenerationSettings
    single: bool


class SummarizeService:
    """decode_request → predict → encode_response, over one registry and batcher."""

    def __init__(self, registry: AdapterRegistry, config: ServingConfig) -> None:
        self.registry = registry
        self.config = config
        # The model thread decodes with the model's tokenizer; counting and tokenizing here, on
        # the event loop, use a private copy so the two threads never share Rust state.
        self._counter = copy.deepcopy(registry.loaded.tokenizer)
        self.batcher: MicroBatcher | ContinuousBatcher
        if config.batching == "auto" and supports_continuous(registry.loaded.model):
            # Decoder-only models: requests join the running batch between decode steps.
            self.batcher = ContinuousBatcher(
                registry,
                lambda dialogues, adapter, settings: registry.prompt_ids(
                    self._counter, dialogues, adapter, settings, config.template
                ),
                max_batch_size=config.max_batch_size,
                max_queued=config.max_queued_dialogues,
                lookahead=config.lookahead,
                draft_memory=config.draft_memory,
            )
        else:  # encoder-decoder models: static micro-batches through transformers' generate
            self.batcher = MicroBatcher(
                lambda dialogues, adapters, settings: registry.generate(
                    dialogues, adapters, settings, config.template
                ),
                max_batch_size=config.max_batch_size,
                max_wait_s=config.max_wait_s,
                max_queued=config.max_queued_dialogues,
                mixed_adapters=config.mixed_adapter_batches,
            )
        self.requests = RequestGauge()  # in progress, kept by ConnectionLimitMiddleware
        self.adapter_users: Counter[str | None] = Counter()  # requests in progress, by adapter
        self.failed_batches = 0
        self._last_failure: BaseException | None = None
        self._check: asyncio.Task[None] | None = None

    def decode_request(self, body: SummarizeRequest) -> DecodedRequest:
        cfg = self.config
        dialogues = body.texts()
        merged = self.registry.merged
        if merged is not None and body.adapter != merged:
            raise HTTPException(
                404, f"this server serves only adapter '{merged}' (merged into its base); ask for it by name"
            )
        if body.adapter is not None and body.adapter not in self.registry:
            known = ", ".join(sorted(self.registry.infos)) or "none"
            raise HTTPException(
                404, f"unknown adapter '{body.adapter}' (loaded: {known}; omit 'adapter' for the base model)"
            )
        if len(dialogues) > cfg.max_dialogues_per_request:
            raise HTTPException(
                413,
                f"{len(dialogues)} dialogues in one request; this server accepts at most "
                f"{cfg.max_dialogues_per_request} (split the request)",
            )
        for i, text in enumerate(dialogues):
            if len(text) > cfg.max_dialogue_chars:
                raise HTTPException(
                    413,
                    f"dialogue {i} has {len(text)} characters; this server accepts at most "
                    f"{cfg.max_dialogue_chars}",
                )
        settings = self.settings_for(body.options)
        # Counting tokens is the costliest check, so it comes last.
        lengths = [len(ids) for ids in self._counter(dialogues, add_special_tokens=False)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > cfg.max_dialogue_tokens:
                raise HTTPException(
                    413, f"dialogue {i} has {n} tokens; this server accepts at most {cfg.max_dialogue_tokens}"
                )
        # Each decoding step of each beam attends over at most its dialogue plus the summary so far.
        beams, steps = settings.num_beams, settings.max_new_tokens
        context = sum(n + steps for n in lengths)
        cost = beams * steps * context
        if cost > cfg.max_request_cost:
            raise HTTPException(
                413,
                f"this request costs {cost} token-steps (num_beams {beams} × max_new_tokens {steps} × "
                f"{context} tokens of dialogue plus summary); this server's max_request_cost is "
                f"{cfg.max_request_cost} (send fewer or shorter dialogues, fewer beams or fewer new tokens)",
            )
        return DecodedRequest(dialogues, body.adapter, settings, body.dialogue is not None)

    def settings_for(self, options: GenerationOptions | None) -> GenerationSettings:
        opts = options or GenerationOptions()
        cfg = self.config
        if opts.max_new_tokens is not None and opts.max_new_tokens > cfg.max_new_tokens_limit:
            raise RequestValidationError(
                [
                    {
                        "type": "less_than_equal",
                        "loc": ("body", "options", "max_new_tokens"),
                        "msg": f"Input should be less than or equal to {cfg.max_new_tokens_limit} "
                        "(this server's max_new_tokens limit)",
                        "input": opts.max_new_tokens,
                        "ctx": {"le": cfg.max_new_tokens_limit},
                    }
                ]
            )
        sampling: dict[str, Any] = {}
        if opts.do_sample:  # greedy requests ignore these; leaving them out lets them share batches
            sampling = {
                "temperature": opts.temperature,
                "top_p": opts.top_p,
                "top_k": opts.top_k,
                "seed": opts.seed,
            }
        return GenerationSettings(
            max_new_tokens=opts.max_new_tokens or cfg.default_max_new_tokens,
            num_beams=opts.num_beams,
            do_sample=opts.do_sample,
            repetition_penalty=opts.repetition_penalty,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            batch_size=cfg.max_batch_size,
            max_dialogue_tokens=cfg.max_dialogue_tokens,
            engine="generate" if isinstance(self.batcher, MicroBatcher) else "auto",
            **sampling,
        )

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Count a request as using ``adapter`` while it runs: an adapter in use is not unloaded.

        Enter it in the same event-loop step as the adapter lookup, so an unload cannot
        come in between.
        """
        self.adapter_users[adapter] += 1
        try:
            yield
        finally:
            self.adapter_users[adapter] -= 1

    async def predict(self, job: DecodedRequest, request_id: str) -> list[str]:
        try:
            with self.using(job.adapter):
                return await self.batcher.submit(job.dialogues, job.adapter, job.settings)
        except BatcherBusy as exc:
            raise HTTPException(503, f"server busy: {exc}", headers={"Retry-After": "1"}) from exc
        except BatcherClosed as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from exc
        except ModelSpecError as exc:  # e.g. an adapter name that vanished between checks
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:
            log.exception("request %s failed", request_id)
            await self.check_after_failure(exc)
            raise HTTPException(
                500, f"generation failed; see the server log for request {request_id}"
            ) from exc

    async def check_after_failure(self, exc: BaseException) -> None:
        """After a batch failed with an internal error, self-check the model (once per batch).

        Every request of the failed batch carries the same exception; the first starts
        the check on the model thread, the others wait for it, so ``/health`` is up to
        date by the time any of them is answered.
        """
        if exc is not self._last_failure:
            self._last_failure = exc
            self.failed_batches += 1
            self._check = asyncio.get_running_loop().create_task(self._self_check())
        if self._check is not None:
            await asyncio.shield(self._check)

    async def _self_check(self) -> None:
        try:
            problem = await self.batcher.run_exclusive(self.registry.check)
        except RuntimeError:  # the model thread has stopped: shutting down
            return
        if problem is not None:
            log.error("model self-check failed: %s", problem)

    def encode_response(
        self, job: DecodedRequest, texts: list[str], request_id: str, seconds: float
    ) -> SummarizeResponse:
        return SummarizeResponse(
            id=request_id,
            model=self.registry.model_name,
            adapter=job.adapter,
            random_weights=self.registry.loaded.spec.is_random,
            summary=texts[0] if job.single else None,
            summaries=texts,
            seconds=round(seconds, 4),
        )


def _bearer_check(token: str | None, *, admin: bool) -> Callable[..., Any]:
    """A dependency that checks ``Authorization: Bearer <token>`` in constant time.

    BearerAuthMiddleware has already checked the headers before the body was read;
    this second check keeps each route safe on its own and declares the scheme in the
    OpenAPI schema.
    """
    expected = token.encode() if token is not None else None

    async def check(request: Request, credentials: BearerCredentials) -> None:
        if expected is None:
            if admin:  # no token configured: nobody may change the served model
                raise HTTPException(
                    403, f"admin endpoints are disabled; start the server with ${TOKEN_ENV} set"
                )
            return
        if not bearer_token_matches(request.headers.get("authorization"), expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _advertise_limits(app: FastAPI, config: ServingConfig) -> None:
    """Make ``/openapi.json`` state this server's limits instead of the schema's hard ceilings.

    Clients (and schemathesis) then see the real bounds; token counts cannot be
    expressed in JSON Schema and stay a documented 413.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            parts = build().get("components", {}).get("schemas", {})
            for name, part in parts.items():  # FastAPI may suffix names (-Input/-Output)
                props = part.get("properties", {})
                if name.startswith("SummarizeRequest"):
                    props.get("dialogue", {})["maxLength"] = config.max_dialogue_chars
                    if "dialogues" in props:
                        props["dialogues"]["maxItems"] = config.max_dialogues_per_request
                        props["dialogues"].get("items", {})["maxLength"] = config.max_dialogue_chars
                elif name.startswith("GenerationOptions") and "max_new_tokens" in props:
                    for alternative in props["max_new_tokens"].get("anyOf", [props["max_new_tokens"]]):
                        if "maximum" in alternative:
                            alternative["maximum"] = config.max_new_tokens_limit
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(registry: AdapterRegistry, config: ServingConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``registry`` with ``config``'s limits and auth."""
    config = config or ServingConfig()
    if len(registry.infos) > config.max_adapters:
        raise ConfigError(
            f"{len(registry.infos)} adapters are loaded; serving.max_adapters allows {config.max_adapters}"
        )
    service = SummarizeService(registry, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        # uvicorn has stopped accepting connections and waited for open requests;
        # whatever is still queued is finished before the model thread stops.
        log.info("shutting down: finishing %d queued dialogues", service.batcher.queued_dialogues)
        await service.batcher.close()

    app = FastAPI(
        title="dialogtune",
        version=__version__,
        lifespan=lifespan,
        description="Dialogue summarization with one base model and many LoRA adapters.",
    )
    app.state.service = service
    app.router.route_class = StrictJSONRoute  # before any route is added
    install_error_handlers(app)
    _advertise_limits(app, config)
    # Added inside out (the last added is the outermost); see middleware.py for the order.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(BearerAuthMiddleware, token=config.api_token, token_env=TOKEN_ENV)
    app.add_middleware(ConnectionLimitMiddleware, limit=config.max_connections, gauge=service.requests)
    app.add_middleware(ShutdownMiddleware)
    app.add_middleware(RequestLogMiddleware)  # outermost: it also logs 401s, 408s, 413s and 503s

    # With no token configured the API is open (bound to 127.0.0.1 by default) and
    # the OpenAPI schema declares no security; /health and /docs are always open.
    guarded = [Depends(_bearer_check(config.api_token, admin=False))] if config.api_token else []
    admin = [Depends(_bearer_check(config.api_token, admin=True))]
    auth_errors = {401: _error("missing or wrong bearer token")} if config.api_token else {}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get(
        "/health",
        response_model=HealthResponse,
        tags=["service"],
        responses={503: {"model": HealthResponse, "description": "model broken ('error') or shutting down"}},
    )
    async def health(response: Response) -> HealthResponse:
        batcher = service.batcher
        status = "error" if registry.problem else "draining" if batcher.closing else "ok"
        if status != "ok":  # load balancers and orchestrators read the status code
            response.status_code = 503
        return HealthResponse(
            status=status,
            problem=registry.problem,
            model=registry.model_name,
            random_weights=registry.loaded.spec.is_random,
            adapters=len(registry.infos),
            queued_dialogues=batcher.queued_dialogues,
            open_requests=service.requests.open,
            batching="continuous" if isinstance(batcher, ContinuousBatcher) else "micro",
            batches=batcher.stats.batches,
            largest_batch=batcher.stats.largest_batch,
            batched_dialogues=(
                batcher.stats.finished if isinstance(batcher, ContinuousBatcher) else batcher.stats.dialogues
            ),
            failed_batches=service.failed_batches,
        )

    @app.get(
        "/v1/adapters",
        response_model=AdaptersResponse,
        dependencies=guarded,
        tags=["summarize"],
        responses=auth_errors,
    )
    async def adapters() -> AdaptersResponse:
        return AdaptersResponse(**registry.describe())

    @app.post(
        "/v1/summarize",
        response_model=SummarizeResponse,
        dependencies=guarded,
        tags=["summarize"],
        responses={
            **auth_errors,
            404: _error("unknown adapter"),
            408: _error("body not received within body_timeout_s"),
            413: _error("body, dialogue, batch or cost over this server's limits"),
            503: _error("queue full, too many requests in progress, or shutting down; retry later"),
        },
    )
    async def summarize(body: SummarizeRequest, request: Request) -> SummarizeResponse:
        start = time.perf_counter()
        request_id: str = request.state.request_id
        request.state.adapter = body.adapter  # for the request log line
        request.state.n_dialogues = len(body.texts())
        job = service.decode_request(body)
        texts = await service.predict(job, request_id)
        return service.encode_response(job, texts, request_id, time.perf_counter() - start)

    @app.post(
        "/v1/admin/adapters",
        response_model=AdapterInfo,
        status_code=201,
        dependencies=admin,
        tags=["admin"],
        responses={
            401: _error("missing or wrong bearer token"),
            403: _error("admin disabled, or a path (or a file in it) outside the adapter root"),
            400: _error("not a usable adapter"),
            408: _error("body not received within body_timeout_s"),
            409: _error("name taken, or max_adapters reached"),
            503: _error("too many requests in progress, or shutting down; retry later"),
        },
    )
    async def load_adapter(body: LoadAdapterRequest, request: Request) -> AdapterInfo:
        request.state.adapter = body.name
        return await adapter_admin.load_adapter(service, body.name, body.path)

    install_openai_routes(app, service, guarded=guarded, admin_only=admin)
    return app
