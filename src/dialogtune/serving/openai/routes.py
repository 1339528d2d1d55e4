"""The OpenAI-compatible routes and their OpenAPI description: ``install_openai_routes(app, ...)``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.params import Depends

from dialogtune.serving import admin
from dialogtune.serving.openai.decode import RequestDecoder
from dialogtune.serving.openai.errors import OpenAIRoute, install_router_errors
from dialogtune.serving.openai.respond import Responder
from dialogtune.serving.openai.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    LoadLoraAdapterRequest,
    LoraAdapterResponse,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    UnloadLoraAdapterRequest,
)


def _error(description: str) -> dict[str, Any]:
    return {"model": OpenAIErrorResponse, "description": description}


def model_list(service: Any, created: int) -> ModelList:
    """The base model (unless it serves a merged adapter only) and every adapter, with its parent."""
    registry, cfg = service.registry, service.config
    longest = cfg.max_prompt_tokens + cfg.max_new_tokens_limit
    base = registry.model_name
    cards = []
    if registry.merged is None:
        cards.append(ModelCard(id=base, created=created, root=base, parent=None, max_model_len=longest))
    for name, info in list(registry.infos.items()):
        cards.append(ModelCard(id=name, created=created, root=info.path, parent=base, max_model_len=longest))
    return ModelList(data=cards)


def install_openai_routes(
    app: FastAPI, service: Any, *, guarded: list[Depends], admin_only: list[Depends]
) -> None:
    """Add the OpenAI-compatible routes to ``app`` (``guarded``/``admin_only``: the auth dependencies)."""
    decode = RequestDecoder(service)
    respond = Responder(service, decode)
    started = int(time.time())
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
        return model_list(service, started)

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        dependencies=guarded,
        responses={**stream, **common},
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        plan = decode.chat(body)  # then started in the same event-loop step (see Responder.start)
        request.state.adapter, request.state.n_dialogues = plan.adapter, len(plan.prompts)
        return await respond.respond(plan, request.state.request_id)

    @router.post(
        "/v1/completions", response_model=Completion, dependencies=guarded, responses={**stream, **common}
    )
    async def completions(body: CompletionRequest, request: Request) -> Any:
        plan = decode.text(body)
        request.state.adapter, request.state.n_dialogues = plan.adapter, len(plan.prompts)
        return await respond.respond(plan, request.state.request_id)

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
