"""A real uvicorn server on 127.0.0.1: concurrent load, and graceful shutdown with requests in flight.

Traffic stays on loopback, bounded in count (32 + 3 requests) and time (timeouts on
every request and on server start and stop).
"""

from __future__ import annotations

import asyncio
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
from dialogtune.serving.demo_adapters import make_random_adapter

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
def app_factory(tmp_path_factory):
    root = tmp_path_factory.mktemp("load-adapters")
    dirs = {f"a{i}": make_random_adapter("random:tiny-llama", root / f"a{i}", seed=i + 1) for i in range(2)}

    def build(**overrides):
        registry = AdapterRegistry(load_model("random:tiny-llama"))
        for name, path in dirs.items():
            registry.load(name, path)
        return create_app(
            registry, ServingConfig(**{"api_token": TOKEN, "default_max_new_tokens": 8, **overrides})
        )

    return build


@contextmanager
def running_server(app) -> Iterator[tuple[str, uvicorn.Server, threading.Thread]]:
    """uvicorn in a thread on a free loopback port (bound here, so no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=20)
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
    assert health["batched_dialogues"] == 32 and health["batches"] < 32  # requests were micro-batched
    assert len({r.json()["id"] for r in responses}) == 32


def test_graceful_shutdown_finishes_requests_in_flight(app_factory):
    app = app_factory(max_batch_size=1, max_wait_ms=0)
    batcher = app.state.service.batcher
    real_run = batcher._run_batch
    started, release = threading.Event(), threading.Event()

    def held_run(dialogues, adapters, settings):  # the first batch runs until the test releases it
        started.set()
        release.wait(20)
        return real_run(dialogues, adapters, settings)

    batcher._run_batch = held_run
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
        while batcher.queued_dialogues < 2:  # one request runs, the other two wait in the queue
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
    assert batcher.closing and batcher.stats.dialogues == 3
