"""The review web app: ``create_app(store, token)`` builds the FastAPI application.

Routes (all HTML except ``/health``):

- ``GET /``: the start page (a name; the access token when one is set).
- ``POST /start``: checks the name (and token, which it keeps in an HttpOnly, SameSite=Strict
  cookie), then redirects to the rater's page.
- ``GET /rate?rater=NAME``: the rater's pending pair, or a newly drawn one, or "done". Reloading
  shows the same pair until it has a vote.
- ``POST /vote``: records the vote (one transaction) and redirects to the next pair (303, so a
  reload never posts twice).
- ``GET /health``: JSON counts for scripts.

With a token (``$DIALOGTUNE_API_TOKEN``, as for ``serve``) every route but ``/``, ``/start`` and
``/health`` needs ``Authorization: Bearer <token>`` or the cookie set by ``/start``.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dialogtune import __version__
from dialogtune.review import pages
from dialogtune.review.store import Refused, ReviewStore, check_rater_name

TOKEN_COOKIE = "dialogtune_review_token"
MAX_FORM_BYTES = 16_384  # a vote is a few hundred bytes


def _html(text: str, status: int = 200) -> HTMLResponse:
    # no-store: the back button must not show a pair that was already judged as if it were new.
    return HTMLResponse(text, status, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, f"form over {MAX_FORM_BYTES} bytes")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8 text") from None


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key) or [""]
    return values[0]


def create_app(store: ReviewStore, token: str | None = None) -> FastAPI:
    """The review app over ``store``; ``token``: the shared access token, or None for an open page."""
    expected = token.encode() if token else None
    app = FastAPI(
        title="dialogtune review", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(given.encode(), expected)

    def refuse_unauthorised(request: Request) -> None:
        if not authorised(request):
            raise Refused(401, "missing or wrong access token: start from the start page")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> HTMLResponse:
        rater = request.query_params.get("rater") or getattr(request.state, "rater", None)
        back = rater if exc.status in (403, 404, 409) else None  # the rater's page would fail again otherwise
        return _html(pages.error_page(exc.status, str(exc), back), exc.status)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "models": len(store.models),
                "dialogues": len(store.items),
                "per_rater": store.per_rater,
            }
        )

    @app.get("/", include_in_schema=False)
    async def start() -> HTMLResponse:
        return _html(
            pages.start_page(len(store.models), len(store.items), store.per_rater, expected is not None)
        )

    @app.post("/start", include_in_schema=False)
    async def begin(request: Request) -> Response:
        form = await _form(request)
        given = _one(form, "token").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            page = pages.start_page(
                len(store.models), len(store.items), store.per_rater, True, "wrong access token"
            )
            return _html(page, 401)
        try:
            name = store.add_rater(_one(form, "name"), kind="human")
        except Refused as exc:
            page = pages.start_page(
                len(store.models), len(store.items), store.per_rater, expected is not None, str(exc)
            )
            return _html(page, exc.status)
        response = RedirectResponse(pages.rate_url(name), status_code=303)
        if expected is not None:
            response.set_cookie(TOKEN_COOKIE, given.decode(), httponly=True, samesite="strict")
        return response

    @app.get("/rate", include_in_schema=False)
    def rate(request: Request, rater: str = "") -> HTMLResponse:  # sync: SQLite runs in the threadpool
        refuse_unauthorised(request)
        name = check_rater_name(rater)
        shown = store.next_pair(name)
        if shown is None:
            done, total = store.progress(name)
            return _html(pages.done_page(name, done, total))
        return _html(pages.pair_page(shown))

    @app.post("/vote", include_in_schema=False)
    async def vote(request: Request) -> Response:
        refuse_unauthorised(request)
        form = await _form(request)
        request.state.rater = _one(form, "rater")
        name = check_rater_name(request.state.rater)
        await run_in_threadpool(
            store.vote,
            name,
            _one(form, "pair"),
            _one(form, "choice"),
            form.get("flag_left", []),
            form.get("flag_right", []),
        )
        return RedirectResponse(pages.rate_url(name), status_code=303)

    return app
