"""Strict JSON bodies and error responses that always render.

Python's ``json`` (and so FastAPI) accepts ``NaN``, ``Infinity``, ``1e999`` (→ inf)
and lone surrogates (``"\\ud800"``). None of them can be encoded back, and FastAPI's
422 handler echoes the offending input: the error response itself failed, and the
client saw a plain-text 500. Here a body holding any of them is a 422 like every
other malformed body (:class:`StrictJSONRoute`), and every error is rendered as
ASCII JSON that cannot fail (:class:`SafeJSONResponse`), unexpected failures included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException


def _unencodable(value: Any) -> tuple[tuple[Any, ...], str] | None:
    """Where a parsed JSON body holds what JSON cannot carry back (and why), or None.

    Walked with a stack, not recursion: the parser already allows deep nesting.
    """
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return loc, "NaN, Infinity and numbers beyond a double's range are not JSON numbers"
        if isinstance(item, str) and not _utf8(item):
            return loc, "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
        if isinstance(item, dict):
            for key, child in item.items():
                if not _utf8(key):
                    return loc, "a key holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, i), child) for i, child in enumerate(item))
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictJSONRequest(Request):
    """A request whose JSON body must be strict JSON (else a 422, like any malformed body)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            value = json.loads(await self.body())  # a JSONDecodeError is FastAPI's json_invalid 422
            found = _unencodable(value)
            if found is not None:
                loc, msg = found
                error = {"type": "json_invalid", "loc": ["body", *loc], "msg": msg, "input": None}
                raise HTTPException(422, [error])
            self._json = value
        return self._json


class StrictJSONRoute(APIRoute):
    """FastAPI's documented way to swap the request class of a route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


class SafeJSONResponse(JSONResponse):
    """Error bodies that always render: ASCII (lone surrogates escaped), non-finite floats as text."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(child) for child in value]
    return value


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return SafeJSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, 422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:  # the server logs it too
        request_id = getattr(request.state, "request_id", "?")
        return SafeJSONResponse(
            {"detail": f"internal error; see the server log for request {request_id}"}, 500
        )
