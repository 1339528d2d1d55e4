"""The HTTP API in-process: per-adapter routing, limits, auth, admin loads, request logs."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient

from dialogtune.generation import GenerationSettings, generate
from dialogtune.models import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIALOGUES = [
    "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks.",
    "#Person1#: Could you help me carry these boxes upstairs?\n#Person2#: Sure, give me one.",
    "#Person1#: Lunch?\n#Person2#: Yes.",
]
NEW_TOKENS = 12


def _make_adapters(spec: str, tmp_path_factory) -> tuple[str, dict[str, str]]:
    root = tmp_path_factory.mktemp(spec.split(":")[1])
    return spec, {f"a{i}": str(make_random_adapter(spec, root / f"a{i}", seed=i + 1)) for i in range(2)}


@pytest.fixture(scope="module", params=["random:tiny-t5", "random:tiny-llama"])
def adapters(request, tmp_path_factory):
    """(spec, {name: dir}) with two random adapters, for each model kind (routing tests)."""
    return _make_adapters(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def llama_adapters(tmp_path_factory):
    """The same for one kind only: limits, auth and logs do not depend on the model kind."""
    return _make_adapters("random:tiny-llama", tmp_path_factory)


def build_app(spec: str, adapter_dirs: dict[str, str], **overrides):
    registry = AdapterRegistry(load_model(spec, dtype="fp32"))  # mixed-adapter batches: exact in fp32
    for name, path in adapter_dirs.items():
        registry.load(name, path)
    config = ServingConfig(**{"default_max_new_tokens": NEW_TOKENS, "api_token": TOKEN, **overrides})
    return create_app(registry, config)


@functools.cache
def expected_texts(spec: str, adapter: str | None) -> list[str]:
    """What loading this adapter alone and calling generate gives."""
    loaded = load_model(spec, adapter=adapter, dtype="fp32")
    return generate(loaded, DIALOGUES, GenerationSettings(max_new_tokens=NEW_TOKENS)).texts


async def _concurrent(app, payloads: list[dict]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):  # starts and drains the batcher, as uvicorn does
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as client:
            return await asyncio.gather(*(client.post("/v1/summarize", json=p) for p in payloads))


def test_each_adapter_gets_its_own_output_in_one_mixed_batch(adapters):
    spec, dirs = adapters
    # A long batching window: all three concurrent requests land in one generate call.
    app = build_app(spec, dirs, max_wait_ms=500)
    names = [None, "a0", "a1"]
    responses = asyncio.run(_concurrent(app, [{"dialogues": DIALOGUES, "adapter": n} for n in names]))
    assert [r.status_code for r in responses] == [200, 200, 200]
    got = {n: r.json()["summaries"] for n, r in zip(names, responses)}
    stats = app.state.service.batcher.stats
    if isinstance(app.state.service.batcher, ContinuousBatcher):  # decoder-only: one running batch
        assert stats.finished == 9 and stats.mixed_steps > 0  # adapters decoded side by side
    else:
        assert stats.batches == 1 and stats.largest_batch == 9  # base and both adapters in one generate
    for name in names:
        assert got[name] == expected_texts(spec, dirs.get(name)), name
    assert got[None] != got["a0"] != got["a1"] != got[None]  # base and adapters really differ
    assert all(r.json()["random_weights"] for r in responses)


def test_per_adapter_batches_give_the_same_outputs(adapters):
    spec, dirs = adapters
    app = build_app(spec, dirs, max_wait_ms=500, mixed_adapter_batches=False)
    responses = asyncio.run(_concurrent(app, [{"dialogues": DIALOGUES, "adapter": n} for n in ("a1", None)]))
    if not isinstance(app.state.service.batcher, ContinuousBatcher):
        assert app.state.service.batcher.stats.batches == 2  # one generate per adapter
    assert responses[0].json()["summaries"] == expected_texts(spec, dirs["a1"])
    assert responses[1].json()["summaries"] == expected_texts(spec, None)


@pytest.fixture(scope="module")
def client(llama_adapters):
    spec, dirs = llama_adapters
    with TestClient(
        build_app(
            spec,
            {"a0": dirs["a0"]},
            max_dialogue_chars=500,
            max_dialogue_tokens=300,
            max_dialogues_per_request=4,
            max_new_tokens_limit=32,
            max_body_bytes=64 * 1024,
        )
    ) as test_client:
        yield test_client


def test_single_dialogue_and_listing(client):
    body = client.post("/v1/summarize", json={"dialogue": DIALOGUES[0], "adapter": "a0"}, headers=AUTH).json()
    assert body["summary"] == body["summaries"][0] and body["adapter"] == "a0" and len(body["summaries"]) == 1
    listing = client.get("/v1/adapters", headers=AUTH).json()
    assert [a["name"] for a in listing["adapters"]] == ["a0"] and listing["adapters"][0]["rank"] == 4
    health = client.get("/health").json()  # open without a token, for load balancers
    assert health["status"] == "ok" and health["adapters"] == 1
    # The OpenAPI schema advertises this server's limits, not the hard ceilings.
    parts = client.get("/openapi.json").json()["components"]["schemas"]
    request = next(v for k, v in parts.items() if k.startswith("SummarizeRequest"))["properties"]
    assert request["dialogue"]["maxLength"] == 500 and request["dialogues"]["maxItems"] == 4
    options = next(v for k, v in parts.items() if k.startswith("GenerationOptions"))["properties"]
    assert options["max_new_tokens"]["anyOf"][0]["maximum"] == 32


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"dialogue": "x", "adapter": "missing"}, 404, "unknown adapter 'missing' (loaded: a0"),
        ({"dialogue": "x" * 501}, 413, "501 characters; this server accepts at most 500"),
        (
            {"dialogue": "é" * 160},
            413,
            "320 tokens; this server accepts at most 300",
        ),  # bytes are tokens here
        ({"dialogues": ["x"] * 5}, 413, "5 dialogues in one request; this server accepts at most 4"),
        ({"dialogue": "x", "options": {"max_new_tokens": 33}}, 422, "less than or equal to 32"),
        ({"dialogue": "x", "options": {"temperature": 0}}, 422, "greater than or equal to 0.05"),
        ({"dialogue": "x", "options": {"num_beams": 9}}, 422, "less than or equal to 4"),
        ({"dialogue": "x", "dialogues": ["y"]}, 422, "exactly one of 'dialogue'"),
        ({}, 422, "exactly one of 'dialogue'"),
        ({"dialogue": ""}, 422, "at least 1 character"),
        ({"dialogues": []}, 422, "at least 1 item"),
        ({"dialogue": "x", "max_tokens": 5}, 422, "Extra inputs are not permitted"),
        ({"dialogue": "x", "adapter": "../etc"}, 422, "should match pattern"),
    ],
)
def test_request_errors(client, payload, status, message):
    response = client.post("/v1/summarize", json=payload, headers=AUTH)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()["detail"], ensure_ascii=False)


def test_body_size_limit(client):
    response = client.post("/v1/summarize", content=b'{"dialogue": "' + b"x" * 70_000 + b'"}', headers=AUTH)
    assert response.status_code == 413 and "larger than 65536 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ],
)
def test_auth_required(client, headers):
    for method, path in [("post", "/v1/summarize"), ("get", "/v1/adapters"), ("post", "/v1/admin/adapters")]:
        response = client.request(method, path, json={"dialogue": "x"}, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_no_token_means_open_api_but_no_admin(llama_adapters):
    spec, dirs = llama_adapters
    with TestClient(build_app(spec, {}, api_token=None)) as open_client:
        assert open_client.post("/v1/summarize", json={"dialogue": "x"}).status_code == 200
        response = open_client.post("/v1/admin/adapters", json={"name": "a0", "path": dirs["a0"]})
        assert response.status_code == 403 and "DIALOGTUNE_API_TOKEN" in response.json()["detail"]
        schema = open_client.get("/openapi.json").json()
        assert "security" not in schema["paths"]["/v1/summarize"]["post"]
        assert "security" in schema["paths"]["/v1/admin/adapters"]["post"]
        assert open_client.get("/docs").status_code == 200


def test_admin_loads_adapter_at_run_time(adapters, tmp_path):
    spec, dirs = adapters
    app = build_app(spec, {}, adapter_root=str(tmp_path.parent))
    with TestClient(app) as admin_client:
        before = admin_client.post(
            "/v1/summarize", json={"dialogues": DIALOGUES, "adapter": "late"}, headers=AUTH
        )
        assert before.status_code == 404
        loaded = admin_client.post(
            "/v1/admin/adapters", json={"name": "late", "path": dirs["a1"]}, headers=AUTH
        )
        assert loaded.status_code == 201, loaded.text
        assert loaded.json()["name"] == "late" and loaded.json()["size_bytes"] > 0
        after = admin_client.post(
            "/v1/summarize", json={"dialogues": DIALOGUES, "adapter": "late"}, headers=AUTH
        )
        assert after.json()["summaries"] == expected_texts(spec, dirs["a1"])
        again = admin_client.post(
            "/v1/admin/adapters", json={"name": "late", "path": dirs["a0"]}, headers=AUTH
        )
        assert again.status_code == 409
        bad = admin_client.post(
            "/v1/admin/adapters", json={"name": "bad", "path": str(tmp_path)}, headers=AUTH
        )
        assert bad.status_code == 400 and "not a PEFT adapter" in bad.json()["detail"]
        outside = admin_client.post("/v1/admin/adapters", json={"name": "x", "path": "/etc"}, headers=AUTH)
        assert outside.status_code == 403 and "only be loaded from under" in outside.json()["detail"]
        # The base still answers as the base after all of that.
        base = admin_client.post("/v1/summarize", json={"dialogues": DIALOGUES}, headers=AUTH)
        assert base.json()["summaries"] == expected_texts(spec, None)


def test_one_json_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="dialogtune.serving.access"):
        ok = client.post(
            "/v1/summarize",
            json={"dialogues": DIALOGUES[:2], "adapter": "a0"},
            headers={**AUTH, "X-Request-ID": "req-42"},
        )
        missing = client.post("/v1/summarize", json={"dialogue": "x", "adapter": "nope"}, headers=AUTH)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dialogtune.serving.access"]
    assert len(lines) == 2
    assert ok.headers["x-request-id"] == ok.json()["id"] == lines[0]["id"] == "req-42"
    assert lines[0]["status"] == 200 and lines[0]["adapter"] == "a0" and lines[0]["n_dialogues"] == 2
    assert lines[0]["latency_ms"] > 0 and lines[0]["path"] == "/v1/summarize"
    assert lines[1]["status"] == 404 and lines[1]["id"] == missing.headers["x-request-id"] != "req-42"
    assert not any("Person1" in r.getMessage() for r in caplog.records)  # dialogue text is never logged


def test_a_failed_load_leaves_the_served_model_as_it_was(llama_adapters, tmp_path):
    spec, dirs = llama_adapters
    # A weights file lacking half its tensors: PEFT injects the LoRA layers and loads what there
    # is; the missing ones are found after that. (A cut-off file is refused before injecting.)
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(dirs["a0"], broken)
    weights = broken / "adapter_model.safetensors"
    save_file({k: v for i, (k, v) in enumerate(sorted(load_file(weights).items())) if i % 2}, weights)
    from dialogtune.errors import ModelSpecError

    registry = AdapterRegistry(load_model(spec, dtype="fp32"))  # mixed-adapter batches: exact in fp32
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS)
    with pytest.raises(ModelSpecError, match="does not match its adapter_config.json"):
        registry.load("broken", broken)  # as the first adapter: the bare base is restored
    assert registry.generate(DIALOGUES, [None] * 3, settings, PromptTemplate()) == expected_texts(spec, None)
    registry.load("a0", dirs["a0"])
    with pytest.raises(ModelSpecError, match="does not match its adapter_config.json"):
        registry.load("broken", broken)  # next to another adapter: only its own layers go
    assert "broken" not in registry and "broken" not in registry.loaded.model.peft_config
    assert registry.generate(DIALOGUES, ["a0"] * 3, settings, PromptTemplate()) == expected_texts(
        spec, dirs["a0"]
    )
    assert registry.generate(DIALOGUES, [None] * 3, settings, PromptTemplate()) == expected_texts(spec, None)
