"""A real uvicorn server on 127.0.0.1: concurrent load, graceful shutdown with requests in
flight, and the connection-level guards (auth before the body, slow bodies, a bound on
connections, a JSON 503 when the shutdown grace period runs out).

Traffic stays on loopback, bounded in count and time (timeouts on every request and on
server start and stop; each guard test takes a few seconds at most).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from dialogtune.models import load_model
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "load-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes.",
    "#Person1#: Can I pay by card?\n#Person2#: Of course.",
    "#Person1#: Bye!\n#Person2#: See you.",
]


@pytest.fixture(scope="module")
def app_factory(tiny_adapters):
    def build(**overrides):
        registry = AdapterRegistry(load_model("random:tiny-llama"))
        for name, path in tiny_adapters.items():
            registry.load(name, path)
        return create_app(
            registry, ServingConfig(**{"api_token": TOKEN, "default_max_new_tokens": 8, **overrides})
        )

    return build


@contextmanager
def running_server(app, graceful_s: int = 20) -> Iterator[tuple[str, uvicorn.Server, threading.Thread]]:
    """uvicorn in a thread on a free loopback port (bound here, so no port race), with the
    options ``dialogtune serve`` passes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = app.state.service.config.uvicorn_options()
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s, **options
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_32_concurrent_requests_on_loopback(app_factory):
    app = app_factory(max_batch_size=16)
    names = [None, "a0", "a1"]

    async def fire(base_url):
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=60, limits=limits) as client:
            payloads = [{"dialogue": DIALOGUES[i % 4], "adapter": names[i % 3]} for i in range(32)]
            responses = await asyncio.gather(*(client.post("/v1/summarize", json=p) for p in payloads))
            return payloads, responses, (await client.get("/health")).json()

    with running_server(app) as (base_url, _, _):
        start = time.perf_counter()
        payloads, responses, health = asyncio.run(fire(base_url))
        seconds = time.perf_counter() - start
    assert [r.status_code for r in responses] == [200] * 32
    assert seconds < 60
    # Same adapter and dialogue → same summary, whichever batch the request landed in.
    by_key: dict[tuple, set[str]] = {}
    for payload, response in zip(payloads, responses):
        by_key.setdefault((payload["dialogue"], payload["adapter"]), set()).add(response.json()["summary"])
    assert len(by_key) == 12 and all(len(texts) == 1 for texts in by_key.values())
    assert health["batched_dialogues"] == 32 and health["batching"] == "continuous"
    assert health["largest_batch"] > 1  # requests were decoded together
    assert len({r.json()["id"] for r in responses}) == 32


def hold_model_thread(batcher) -> tuple[threading.Event, threading.Event]:
    """Make the model thread stop before it takes the first work, until ``release`` is set."""
    real_admit = batcher._admit
    started, release = threading.Event(), threading.Event()

    def held_admit(engine):
        if batcher._inbox and not started.is_set():
            started.set()
            release.wait(20)
        return real_admit(engine)

    batcher._admit = held_admit
    return started, release


def test_graceful_shutdown_finishes_requests_in_flight(app_factory):
    app = app_factory(max_batch_size=1, max_wait_ms=0)
    batcher = app.state.service.batcher
    started, release = hold_model_thread(batcher)
    results: list[httpx.Response] = []

    def post(base_url, adapter):
        results.append(
            httpx.post(
                f"{base_url}/v1/summarize",
                json={"dialogue": DIALOGUES[0], "adapter": adapter},
                headers=AUTH,
                timeout=30,
            )
        )

    with running_server(app) as (base_url, server, thread):
        clients = [threading.Thread(target=post, args=(base_url, name)) for name in (None, "a0", "a1")]
        for client in clients:
            client.start()
        assert started.wait(20)
        deadline = time.monotonic() + 20
        while batcher.queued_dialogues < 3:  # the three requests wait while the model thread is held
            assert time.monotonic() < deadline, "requests did not reach the server"
            time.sleep(0.01)
        server.should_exit = True  # what SIGTERM / Ctrl-C does
        time.sleep(0.2)  # uvicorn is now shutting down, with all three requests in flight
        with pytest.raises(httpx.ConnectError):  # ... and takes no new connections
            httpx.get(f"{base_url}/health", timeout=5)
        release.set()
        for client in clients:
            client.join(timeout=30)
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert sorted(r.status_code for r in results) == [200, 200, 200]
    assert batcher.closing and batcher.stats.finished == 3


def _raw_request(base_url: str, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent ``head`` (request line and headers) and ``body``, and waits."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return conn


def _read_response(conn: socket.socket, timeout: float) -> tuple[int, dict, float]:
    """(status, JSON body, seconds waited) of the response on ``conn``; fails after ``timeout``."""
    conn.settimeout(timeout)
    start, data = time.monotonic(), b""
    try:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pytest.fail(f"no response within {timeout} s (got {data!r})")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.monotonic() - start


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def _post_head(length: int, token: str | None = TOKEN, path: str = "/v1/summarize") -> str:
    auth = f"Authorization: Bearer {token}\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\nHost: test\n{auth}Content-Type: application/json\nContent-Length: {length}\n"
    )


def test_auth_is_checked_before_the_body_is_read(app_factory):
    """An unauthenticated client announcing a 2 MB body is answered 401 at once, before
    it sends a byte of it: the server never buffers bodies for strangers."""
    with running_server(app_factory()) as (base_url, _, _):
        for token in (None, "wrong-token"):
            conn = _raw_request(base_url, _post_head(2_000_000, token))
            with conn:
                status, body, waited = _read_response(conn, timeout=3)
                assert status == 401 and "bearer token" in body["detail"] and waited < 2
                assert conn.recv(1) == b""  # ... and the connection is closed, body unread


def test_slow_bodies_time_out_with_408(app_factory):
    with running_server(app_factory(body_timeout_s=1.0)) as (base_url, _, _):
        conn = _raw_request(base_url, _post_head(1000), b'{"dialogue": "')
        with conn:
            start = time.monotonic()
            conn.settimeout(0.25)
            for _ in range(20):  # a byte every 0.25 s keeps the connection busy, not the body on time
                try:
                    conn.sendall(b"x")
                    if conn.recv(1, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    continue
            status, body, _ = _read_response(conn, timeout=3)
            assert status == 408 and "within 1" in body["detail"]
            assert 0.9 < time.monotonic() - start < 4
        # The server is still healthy and serves the next (prompt) client.
        assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200


def test_open_connections_are_bounded(app_factory):
    app = app_factory(max_connections=3, body_timeout_s=30)
    with running_server(app) as (base_url, _, _):
        held = [_raw_request(base_url, _post_head(100), b'{"dialogue": ') for _ in range(3)]
        try:
            time.sleep(0.5)  # all three are in the app, waiting for their bodies
            response = httpx.post(f"{base_url}/v1/summarize", json={"dialogue": "x"}, headers=AUTH, timeout=5)
            assert response.status_code == 503, response.text
            assert "max_connections" in response.json()["detail"] and response.headers["retry-after"]
            assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200  # monitoring still answers
        finally:
            for conn in held:
                conn.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the three clients left and takes new ones again
            response = httpx.post(
                f"{base_url}/v1/summarize", json={"dialogue": "x"}, headers=AUTH, timeout=30
            )
            if response.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 200, response.text


def test_requests_cut_off_by_the_shutdown_timeout_get_a_json_503(app_factory):
    app = app_factory(max_batch_size=1, max_wait_ms=0)
    batcher = app.state.service.batcher
    started, release = hold_model_thread(batcher)  # a generation far longer than the grace period
    results: list[httpx.Response] = []

    def post(base_url):
        results.append(
            httpx.post(f"{base_url}/v1/summarize", json={"dialogue": DIALOGUES[0]}, headers=AUTH, timeout=30)
        )

    try:
        with running_server(app, graceful_s=1) as (base_url, server, thread):
            client = threading.Thread(target=post, args=(base_url,))
            client.start()
            assert started.wait(20)
            server.should_exit = True  # SIGTERM; the generation outlasts the 1 s grace period
            client.join(timeout=10)
            assert results, "no answer after the grace period"
            release.set()  # the generation ends; the server's lifespan shutdown can finish
    finally:
        release.set()
    response = results[0]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert "shut down" in response.json()["detail"]
