"""Errors in OpenAI's shape on the OpenAI-compatible routes, and only there.

OpenAI (and vLLM) answer ``{"error": {"message", "type", "param", "code"}}``; clients such as
the ``openai`` package read the message from there. dialogtune's own routes keep their
``{"detail": ...}``. Two places produce errors for a route: the route itself (validation,
HTTP errors, unexpected failures), handled by :class:`OpenAIRoute`, and the middleware that
answers before the body is read (auth, body size and time, busy, shutdown), which asks
:func:`wants_openai_errors` for the path.

Validation errors become 400 ``invalid_request_error`` naming the field in ``param``, as
OpenAI does (not FastAPI's 422).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dialogtune.serving.strict_json import SafeJSONResponse, StrictJSONRoute

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
OPENAI_PATHS = frozenset({"/v1/models", "/v1/chat/completions", "/v1/completions", *ADMIN_PATHS})

# status -> (type, code), after OpenAI's own answers (a wrong key is an invalid_request_error
# with code invalid_api_key; an unknown model one with code model_not_found).
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    408: ("invalid_request_error", "request_timeout"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``status``, ``message``, and the field it is about."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def wants_openai_errors(path: str | None) -> bool:
    return path in OPENAI_PATHS


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    kind, default_code = _KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def error_response(error: OpenAIError) -> Response:
    body = error_body(error.status, error.message, param=error.param, code=error.code)
    return SafeJSONResponse(body, error.status, headers=error.headers or None)


def _validation_error(errors: list[Any]) -> OpenAIError:
    """FastAPI's list of errors as one 400, naming the first field (``messages.0.role``)."""
    parts, param = [], None
    for error in errors[:3]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        param = param or where or None
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more")
    return OpenAIError(400, "; ".join(parts) or "invalid request", param=param)


def as_openai_error(exc: Exception) -> OpenAIError | None:
    """``exc`` in OpenAI's terms, or None for an unexpected failure."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(list(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 422 and isinstance(exc.detail, list):  # a body that is not strict JSON
            return _validation_error(exc.detail)
        return OpenAIError(exc.status_code, str(exc.detail), headers=exc.headers)
    return None


class OpenAIRoute(StrictJSONRoute):
    """A strict-JSON route whose every error (validation included) is in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = as_openai_error(exc)
                if error is None:
                    request_id = getattr(request.state, "request_id", "?")
                    log.exception("request %s failed", request_id)
                    error = OpenAIError(500, f"internal error; see the server log for request {request_id}")
                return error_response(error)

        return openai_errors


def install_router_errors(app: FastAPI) -> None:
    """OpenAI's shape for the errors the router itself answers on these paths (405 for a method
    they do not take), which reach the app's handler, not the route's."""
    fallback = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        if wants_openai_errors(request.url.path) and isinstance(exc, StarletteHTTPException):
            return error_response(OpenAIError(exc.status_code, str(exc.detail), headers=exc.headers))
        return await fallback(request, exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
