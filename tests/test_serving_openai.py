"""The OpenAI-compatible routes, driven by the real ``openai`` client against uvicorn on loopback.

A tiny random Llama (fp32, a ChatML-style chat template set here) with two random adapters:
models list, chat and completions (whole and streamed, the same text), adapter selection
(equal to generating locally with that adapter alone), the summarize mode (equal to
/v1/summarize), stop strings, OpenAI-shaped errors, and vLLM's adapter load/unload routes.
A T5 runs the same routes in-process (encoder-decoder models take transformers' generate).
"""

from __future__ import annotations

import functools
import gc
import json
import threading
import time
import weakref

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from test_serving_load import hold_model_thread, running_server

from dialogtune.generation import GenerationSettings, generate_ids
from dialogtune.models import load_model
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "openai-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "random:tiny-llama"
CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DIALOGUE = "#Person1#: Is the train late?\n#Person2#: Ten minutes, they say."
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": DIALOGUE}]
NEW = 16


def with_chat_template(loaded):
    loaded.tokenizer.chat_template = CHATML
    return loaded


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-adapters")
    return {f"a{i}": str(make_random_adapter(BASE, root / f"a{i}", seed=i + 1)) for i in range(2)}


def build_app(adapter_dirs, spec=BASE, **overrides):
    registry = AdapterRegistry(with_chat_template(load_model(spec, dtype="fp32")))
    for name, path in adapter_dirs.items():
        registry.load(name, path)
    config = ServingConfig(**{"api_token": TOKEN, "default_max_new_tokens": NEW, **overrides})
    return create_app(registry, config)


@pytest.fixture(scope="module")
def server(adapter_dirs):
    app = build_app(adapter_dirs, max_new_tokens_limit=64, max_prompt_tokens=400)
    with running_server(app) as (base_url, _, _):
        yield app, base_url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


@functools.cache
def local(adapter_dir: str | None, prompt: tuple[int, ...], new: int = NEW) -> tuple[str, int]:
    """(text, generated tokens) from loading that adapter alone and generating, greedy, fp32."""
    loaded = load_model(BASE, adapter=adapter_dir, dtype="fp32")
    result = generate_ids(loaded, [list(prompt)], GenerationSettings(max_new_tokens=new), progress=False)
    return result.texts[0], result.generated_tokens


def chat_prompt_ids() -> tuple[int, ...]:
    tokenizer = with_chat_template(load_model(BASE)).tokenizer
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def streamed_chat(client, **kwargs) -> tuple[str, list, object]:
    """(text, finish reasons, usage) of a streamed chat completion."""
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    text, reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    return "".join(text), reasons, usage


def test_models_lists_the_base_and_each_adapter_with_its_parent(client, adapter_dirs):
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {BASE, "a0", "a1"}
    assert cards[BASE].parent is None and cards["a0"].parent == BASE == cards["a1"].parent
    assert cards["a1"].root.endswith("a1") and cards["a0"].object == "model"


def test_chat_whole_and_streamed_give_the_same_text_as_local_generation(client, adapter_dirs):
    prompt = chat_prompt_ids()
    answers = {}
    for model in (BASE, "a0", "a1"):
        kwargs = dict(model=model, messages=MESSAGES, temperature=0, max_tokens=NEW)
        whole = client.chat.completions.create(**kwargs)
        text = whole.choices[0].message.content
        streamed, reasons, usage = streamed_chat(client, **kwargs)
        assert streamed == text  # the same text, piece by piece
        assert reasons == [whole.choices[0].finish_reason]
        assert usage.prompt_tokens == whole.usage.prompt_tokens == len(prompt)
        assert usage.completion_tokens == whole.usage.completion_tokens
        expected, generated = local(adapter_dirs.get(model), prompt)
        assert text.strip() == expected and whole.usage.completion_tokens == generated
        assert whole.model == model and whole.object == "chat.completion"
        answers[model] = text
    assert len(set(answers.values())) == 3  # each adapter answers differently from the base


def test_streaming_never_splits_a_utf8_character(client):
    # tiny-llama's vocabulary is bytes: multi-byte characters come in several tokens.
    stream = client.completions.create(
        model="a0", prompt="Grüße, 東京! ", max_tokens=48, temperature=0, stream=True
    )
    pieces = [c.choices[0].text for c in stream if c.choices and c.choices[0].text]
    whole = client.completions.create(model="a0", prompt="Grüße, 東京! ", max_tokens=48, temperature=0)
    assert "".join(pieces) == whole.choices[0].text
    for piece in pieces:
        piece.encode("utf-8")  # no lone surrogates; every piece is whole characters


def test_completions_take_token_ids_and_lists_of_prompts(client, adapter_dirs):
    tokenizer = load_model(BASE).tokenizer
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Hello there. ", "Lunch at noon? ")]
    one = client.completions.create(model="a1", prompt=ids[0], temperature=0, max_tokens=NEW)
    assert one.choices[0].text.strip() == local(adapter_dirs["a1"], tuple(ids[0]))[0]
    assert one.usage.prompt_tokens == len(ids[0]) and one.object == "text_completion"
    both = client.completions.create(model="a1", prompt=ids, temperature=0, max_tokens=NEW)
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[0].text == one.choices[0].text
    assert both.choices[1].text.strip() == local(adapter_dirs["a1"], tuple(ids[1]))[0]
    text = client.completions.create(model="a1", prompt="Hello there. ", temperature=0, max_tokens=NEW)
    assert text.choices[0].text == one.choices[0].text  # the text is encoded to the same ids


def test_summarize_mode_gives_the_summary_of_v1_summarize(client, server):
    _, base_url = server
    for adapter in (None, "a0"):
        summary = httpx.post(
            f"{base_url}/v1/summarize",
            json={"dialogue": DIALOGUE, "adapter": adapter},
            headers=AUTH,
            timeout=60,
        ).json()["summary"]
        kwargs = dict(
            model=adapter or BASE,
            messages=[{"role": "user", "content": "ignored: not the last user message"}, MESSAGES[1]],
            extra_body={"dialogtune": {"summarize": True}},
        )
        whole = client.chat.completions.create(**kwargs)  # greedy and the server's length by default
        assert whole.choices[0].message.content == summary
        assert streamed_chat(client, **kwargs)[0] == summary


def test_stop_strings_end_the_text_before_them(client):
    kwargs = dict(model="a0", prompt="Once upon a time", temperature=0, max_tokens=48)
    full = client.completions.create(**kwargs)
    text = full.choices[0].text
    at = next(i for i in range(4, len(text)) if text[i].isascii() and text[i].isalnum())
    stop = text[at]
    cut = text[: text.index(stop)]
    stopped = client.completions.create(stop=[stop, "never there"], **kwargs)
    assert stopped.choices[0].text == cut and stopped.choices[0].finish_reason == "stop"
    # generation ended at the stop (on the model thread), not at max_tokens
    assert stopped.usage.completion_tokens < full.usage.completion_tokens
    stream = client.completions.create(stop=stop, stream=True, **kwargs)
    chunks = [c.choices[0] for c in stream if c.choices]
    assert "".join(c.text for c in chunks) == cut and chunks[-1].finish_reason == "stop"
    unmatched = client.completions.create(stop="\x00never", **kwargs)
    assert unmatched.choices[0].text == text and unmatched.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "nope"}, 404, "model"),
        ({"model": "a0", "n": 2}, 400, "n"),
        ({"model": "a0", "temperature": "hot"}, 400, "temperature"),
        ({"model": "a0", "max_tokens": 65}, 400, "max_tokens"),
        ({"model": "a0", "presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"model": "a0", "extra_body": {"best_of": 2}}, 400, "best_of"),
        ({"model": "a0", "messages": []}, 400, "messages"),
        ({"model": "a0", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": "a0", "messages": [{"role": "user", "content": "x" * 500}]}, 413, None),
    ],
)
def test_bad_requests_get_openai_errors(client, kwargs, status, param):
    kwargs = {"messages": MESSAGES, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**kwargs)
    error = caught.value
    assert error.status_code == status
    assert set(error.body) == {"message", "type", "param", "code"} and error.body["param"] == param
    assert error.body["type"] == "invalid_request_error" and error.body["message"]
    if status == 404:
        assert error.body["code"] == "model_not_found" and "a0" in error.body["message"]
    if status == 413:
        assert error.body["code"] == "context_length_exceeded"


def test_completion_errors_and_auth(client, server):
    _, base_url = server
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="a0", prompt=[5, 300, 7], max_tokens=4)  # 259 byte tokens
    assert caught.value.body["param"] == "prompt" and "vocabulary" in caught.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=base_url + "/v1", api_key="wrong-key", max_retries=0).models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    # The body limit and strict JSON answer in OpenAI's shape on these routes...
    big = httpx.post(f"{base_url}/v1/completions", content=b"x" * (3 * 1024 * 1024), headers=AUTH, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    nan = httpx.post(
        f"{base_url}/v1/completions",
        content=b'{"model": "a0", "prompt": "x", "temperature": NaN}',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "temperature"
    # ... and dialogtune's own routes keep theirs.
    own = httpx.post(f"{base_url}/v1/summarize", json={"dialogue": "x", "adapter": "nope"}, headers=AUTH)
    assert own.status_code == 404 and "detail" in own.json()


def lora_tensors(registry, name: str) -> list[weakref.ref]:
    return [weakref.ref(p) for n, p in registry.loaded.model.named_parameters() if f".{name}." in n]


def test_load_and_unload_adapters_like_vllm(server, client, adapter_dirs):
    app, base_url = server
    registry = app.state.service.registry
    kwargs = dict(model="a1", messages=MESSAGES, temperature=0, max_tokens=NEW)
    before = client.chat.completions.create(**kwargs).choices[0].message.content
    tensors = lora_tensors(registry, "a1")
    assert tensors and all(t() is not None for t in tensors)

    unload = httpx.post(
        f"{base_url}/v1/unload_lora_adapter", json={"lora_name": "a1"}, headers=AUTH, timeout=30
    )
    assert unload.status_code == 200, unload.text
    gc.collect()
    assert not any(t() is not None for t in tensors)  # the adapter's weights are freed
    assert "a1" not in registry.loaded.model.peft_config and registry.problem is None
    assert {m.id for m in client.models.list().data} == {BASE, "a0"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**kwargs)
    again = httpx.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": "a1"}, headers=AUTH)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"

    load = httpx.post(
        f"{base_url}/v1/load_lora_adapter",
        json={"lora_name": "a1", "lora_path": adapter_dirs["a1"]},
        headers=AUTH,
        timeout=30,
    )
    assert load.status_code == 200 and load.json()["adapter"]["name"] == "a1"
    assert client.chat.completions.create(**kwargs).choices[0].message.content == before
    taken = httpx.post(
        f"{base_url}/v1/load_lora_adapter",
        json={"lora_name": "a1", "lora_path": adapter_dirs["a1"]},
        headers=AUTH,
        timeout=30,
    )
    assert taken.status_code == 409 and "already loaded" in taken.json()["error"]["message"]
    missing = httpx.post(
        f"{base_url}/v1/load_lora_adapter",
        json={"lora_name": "a2", "lora_path": "/nonexistent"},
        headers=AUTH,
    )
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    no_token = httpx.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": "a0"})
    assert no_token.status_code == 401 and no_token.json()["error"]["code"] == "invalid_api_key"


def test_an_adapter_in_use_is_not_unloaded(server, client):
    app, base_url = server
    batcher = app.state.service.batcher
    started, release = hold_model_thread(batcher)
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(
            client.chat.completions.create(model="a0", messages=MESSAGES, temperature=0, max_tokens=4)
        )
    )
    worker.start()
    try:
        assert started.wait(20)
        refused = httpx.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": "a0"}, headers=AUTH)
        assert refused.status_code == 409 and "in progress" in refused.json()["error"]["message"]
    finally:
        release.set()
        worker.join(30)
    assert done and done[0].choices[0].message.content is not None
    assert "a0" in app.state.service.registry


def test_admin_routes_need_a_configured_token(adapter_dirs):
    with TestClient(build_app({}, api_token=None)) as client:
        response = client.post("/v1/unload_lora_adapter", json={"lora_name": "a0"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
        assert client.get("/v1/models").status_code == 200  # the rest of the API is open


def test_encoder_decoder_models_serve_the_same_routes(tmp_path):
    spec = "random:tiny-t5"
    adapter = str(make_random_adapter(spec, tmp_path / "t5a", seed=3))
    registry = AdapterRegistry(load_model(spec, dtype="fp32"))
    registry.load("t5a", adapter)
    app = create_app(registry, ServingConfig(api_token=TOKEN, default_max_new_tokens=NEW))
    with TestClient(app) as client:
        summary = client.post(
            "/v1/summarize", json={"dialogue": DIALOGUE, "adapter": "t5a"}, headers=AUTH
        ).json()["summary"]
        body = {"model": "t5a", "messages": [MESSAGES[1]], "dialogtune": {"summarize": True}}
        whole = client.post("/v1/chat/completions", json=body, headers=AUTH).json()
        assert whole["choices"][0]["message"]["content"] == summary
        assert whole["usage"]["prompt_tokens"] > len(DIALOGUE)  # the template and T5's EOS
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=AUTH) as r:
            events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == summary
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        tokenizer = registry.loaded.tokenizer
        ids = tokenizer("Hello there.")["input_ids"]
        text = client.post(
            "/v1/completions",
            json={"model": spec, "prompt": ids, "max_tokens": 8, "temperature": 0},
            headers=AUTH,
        ).json()
        assert text["usage"]["prompt_tokens"] == len(ids) and text["choices"][0]["text"] is not None
        plain = client.post(
            "/v1/chat/completions", json={"model": spec, "messages": [MESSAGES[1]]}, headers=AUTH
        )
        assert plain.status_code == 400 and "chat template" in plain.json()["error"]["message"]


def test_a_client_that_leaves_a_stream_frees_its_rows(server, monkeypatch):
    app, base_url = server
    batcher = app.state.service.batcher
    steps: list[int] = []
    real_step = batcher._step

    def slow_step(rows):  # 20 ms per decode step: 64 tokens would take over a second
        steps.append(len(rows))
        time.sleep(0.02)
        real_step(rows)

    monkeypatch.setattr(batcher, "_step", slow_step)
    body = {"model": "a0", "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers=AUTH, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith('data: {"id"'):
                break  # one chunk, then the client hangs up
    deadline = time.monotonic() + 10
    while batcher.queued_dialogues and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.queued_dialogues == 0
    assert len(steps) < 48  # the row ended soon after its client left, not after 64 tokens


def test_a_merged_server_serves_only_its_adapter(adapter_dirs):
    from dialogtune.models.inference import load_for_inference

    loaded = load_for_inference(BASE, adapter=adapter_dirs["a0"], precision="fp32", merge="yes")
    app = create_app(
        AdapterRegistry(loaded, merged="a0"), ServingConfig(api_token=TOKEN, default_max_new_tokens=4)
    )
    with TestClient(app) as client:
        cards = client.get("/v1/models", headers=AUTH).json()["data"]
        assert [(c["id"], c["parent"]) for c in cards] == [("a0", BASE)]
        body = {"prompt": "Hello", "max_tokens": 4, "temperature": 0}
        assert client.post("/v1/completions", json={**body, "model": "a0"}, headers=AUTH).status_code == 200
        base = client.post("/v1/completions", json={**body, "model": BASE}, headers=AUTH)
        assert base.status_code == 404 and base.json()["error"]["code"] == "model_not_found"
        unload = client.post("/v1/unload_lora_adapter", json={"lora_name": "a0"}, headers=AUTH)
        assert unload.status_code == 409 and "merged" in unload.json()["error"]["message"]
