"""ASGI middleware: request ids and logs, the shutdown 503, the bound on requests in
progress, auth from the headers, and the body's size and time limits.

Plain ASGI (not Starlette's ``BaseHTTPMiddleware``), so responses pass through
untouched and a request body is never read twice. From the outside in::

    RequestLog → Shutdown → ConnectionLimit → BearerAuth → BodyLimit → FastAPI

so a request is counted before anything else, refused on its headers alone when its
token is wrong (the body is never read), and only then has its body read, bounded in
size and in time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from dialogtune.serving.openai.errors import ADMIN_PATHS, error_body, wants_openai_errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("dialogtune.serving.access")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json_error(
    send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = (), *, scope: Scope
) -> None:
    """A complete ``{"detail": ...}`` response that also closes the connection.

    Middleware answers before the app has read the request body; closing the
    connection means the server never reads (or buffers) the rest of it. The
    OpenAI-compatible routes get OpenAI's ``{"error": {...}}`` shape instead.
    """
    content = error_body(status, detail) if wants_openai_errors(scope.get("path")) else {"detail": detail}
    body = json.dumps(content).encode()  # ASCII: every message is encodable
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bearer_token_matches(authorization: str | None, expected: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <expected>``, compared in constant time."""
    scheme, _, credentials = (authorization or "").partition(" ")
    given = credentials.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(given, expected)


class RequestLogMiddleware:
    """Gives every request an id and logs one JSON line per request when it ends.

    The line holds ``id, method, path, status, latency_ms`` and, for summarize
    requests, ``adapter`` and ``n_dialogues`` (set by the endpoint in
    ``request.state``). Dialogue text is never logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        # A client's id is kept (to correlate logs across services) only when it is tame.
        request_id = given if given and _CLIENT_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # what the client sees if the app dies before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record = {
                "event": "request",
                "id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 1),
            }
            for key in ("adapter", "n_dialogues"):
                if key in state:
                    record[key] = state[key]
            access_log.info(json.dumps(record))


class ShutdownMiddleware:
    """Answers a JSON 503 to requests cut off by the end of the shutdown grace period.

    When ``--graceful-timeout`` runs out, uvicorn cancels the requests still in
    progress, and would answer them with a plain-text 500. A cancelled request gets
    ``503 {"detail": ...}`` with ``Retry-After`` instead: the client may retry
    elsewhere (or here, once restarted).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python 3.11+: we handled it
                task.uncancel()
            if not started:
                access_log.warning("request cancelled by the shutdown; answering 503")
                detail = "the server shut down before this request finished; retry"
                await send_json_error(send, 503, detail, [(b"retry-after", b"5")], scope=scope)


class RequestGauge:
    """How many requests are in progress (shared by the limit and ``/health``)."""

    def __init__(self) -> None:
        self.open = 0


class ConnectionLimitMiddleware:
    """Answers 503 once ``limit`` requests are in progress (``/health`` is exempt).

    A request is in progress from its headers to its response, whether it is sending
    its body, queued or generating; each holds a connection and up to a body's worth
    of memory. ``/health`` stays answerable so that monitoring sees a busy server, not
    a dead one.
    """

    def __init__(self, app: ASGIApp, limit: int, gauge: RequestGauge, exempt: Sequence[str] = ("/health",)):
        self.app = app
        self.limit = limit
        self.gauge = gauge
        self.exempt = set(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.gauge.open >= self.limit:
            detail = (
                f"{self.gauge.open} requests are in progress, this server's max_connections; retry shortly"
            )
            await send_json_error(send, 503, detail, [(b"retry-after", b"1")], scope=scope)
            return
        self.gauge.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.open -= 1


class BearerAuthMiddleware:
    """Checks the bearer token from the headers, before anything reads the body.

    ``/v1/*`` needs ``Authorization: Bearer <token>`` when a token is configured (401
    otherwise); ``/v1/admin/*`` and vLLM's adapter routes always need it (403 while no token
    is configured).
    A refused client's body is never read: the response closes the connection, so a
    stranger cannot make the server buffer (or wait for) megabytes. The endpoints keep
    their own check as well, which also declares the scheme in the OpenAPI schema.
    """

    def __init__(self, app: ASGIApp, token: str | None, token_env: str) -> None:
        self.app = app
        self.expected = token.encode() if token is not None else None
        self.token_env = token_env

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v1/"):
            if self.expected is None:
                if path.startswith("/v1/admin/") or path in ADMIN_PATHS:  # nobody may change the model
                    detail = f"admin endpoints are disabled; start the server with ${self.token_env} set"
                    await send_json_error(send, 403, detail, scope=scope)
                    return
            elif not bearer_token_matches(_header(scope, b"authorization"), self.expected):
                await send_json_error(
                    send,
                    401,
                    "missing or wrong bearer token",
                    [(b"www-authenticate", b"Bearer")],
                    scope=scope,
                )
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to request bodies over ``max_bytes`` and 408 to bodies slower than
    ``timeout_s``, before the app parses them.

    Neither Starlette nor uvicorn caps body size or the time a body may take; without
    this a client could make the server buffer gigabytes, or hold a connection open
    forever by sending a byte now and then. A declared ``Content-Length`` is checked up
    front; chunked bodies are counted as they arrive. The timeout is for the whole
    body, not per chunk, so a trickle cannot keep it alive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def _reject(self, send: Send, scope: Scope) -> None:
        await send_json_error(send, 413, f"request body is larger than {self.max_bytes} bytes", scope=scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, scope)
            return
        # Read the whole (bounded) body first, then replay it to the app: a 413 can
        # only be sent before the app starts answering.
        chunks: list[bytes] = []
        size = 0
        more = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                detail = f"the request body did not arrive within {self.timeout_s:g} s (body_timeout_s)"
                await send_json_error(send, 408, detail, scope=scope)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, scope)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls: wait for the disconnect, as the server would

        await self.app(scope, replay, send)
