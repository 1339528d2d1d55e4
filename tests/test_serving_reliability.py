"""The server under hostile input, in-process: adapters that would break the shared base,
unencodable JSON, a cost bound per request, adapter files outside the root, the adapter cap,
and a /health that tells a broken model from a working one.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from peft import LoraConfig, get_peft_model

from dialogtune.errors import ConfigError
from dialogtune.models import load_model
from dialogtune.models.adapters import write_base_info
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
from dialogtune.serving import registry as registry_module
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = "random:tiny-llama"
TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIALOGUES = [
    "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks.",
    "#Person1#: Could you help me carry these boxes upstairs?\n#Person2#: Sure.",
]


def _modules_to_save_adapter(folder, *, broken: bool = False):
    """A LoRA adapter that also saves a whole ``lm_head`` (``modules_to_save``), like a
    fine-tune that trained the output layer; ``broken`` cuts its weights file short."""
    loaded = load_model(SPEC)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    model = get_peft_model(loaded.model, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(7)) * 0.5)
    model.save_pretrained(str(folder))
    loaded.model = model
    write_base_info(folder, loaded)
    if broken:
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    found = {f"a{i}": make_random_adapter(SPEC, root / f"a{i}", seed=i + 1) for i in range(2)}
    found["mts"] = _modules_to_save_adapter(root / "mts")
    found["mts_broken"] = _modules_to_save_adapter(root / "mts_broken", broken=True)
    return root, found


def build(dirs, names=("a0",), **overrides):
    root, found = dirs
    registry = AdapterRegistry(load_model(SPEC, dtype="fp32"))
    for name in names:
        registry.load(name, found[name])
    config = {"api_token": TOKEN, "default_max_new_tokens": 8, "adapter_root": root, **overrides}
    return create_app(registry, ServingConfig(**config))


def answers(client, adapters=(None, "a0")) -> dict:
    """Every adapter's (and the base's) summaries of DIALOGUES, as the server gives them."""
    out = {}
    for name in adapters:
        response = client.post("/v1/summarize", json={"dialogues": DIALOGUES, "adapter": name}, headers=AUTH)
        assert response.status_code == 200, (name, response.text)
        out[name] = response.json()["summaries"]
    return out


# -- 9: adapters that would break the shared base --------------------------------------


@pytest.mark.parametrize("which", ["mts", "mts_broken"])
def test_modules_to_save_adapters_are_refused_and_change_nothing(dirs, which):
    with TestClient(build(dirs)) as client:
        before = answers(client)
        response = client.post(
            "/v1/admin/adapters", json={"name": "x", "path": str(dirs[1][which])}, headers=AUTH
        )
        assert response.status_code == 400, response.text
        assert "modules_to_save" in response.json()["detail"] and "lm_head" in response.json()["detail"]
        assert answers(client) == before  # the base and a0 answer exactly as before
        assert client.get("/health").json()["status"] == "ok"
        assert "x" not in {a["name"] for a in client.get("/v1/adapters", headers=AUTH).json()["adapters"]}


@pytest.mark.parametrize("first", [True, False])
def test_a_load_that_breaks_the_others_is_undone_even_past_the_config_checks(dirs, monkeypatch, first):
    """Should an adapter the config checks let through break the other rows, the load
    self-check notices, the adapter is taken out again and the model answers as before."""
    monkeypatch.setattr(registry_module, "unservable_reason", lambda config: None)
    names = () if first else ("a0",)
    with TestClient(build(dirs, names)) as client:
        before = answers(client, (None, *names))
        response = client.post(
            "/v1/admin/adapters", json={"name": "x", "path": str(dirs[1]["mts"])}, headers=AUTH
        )
        assert response.status_code == 400, response.text
        assert "self-check" in response.json()["detail"]
        assert answers(client, (None, *names)) == before
        assert client.get("/health").status_code == 200
        # ... and the next good adapter still loads and serves next to them.
        loaded = client.post(
            "/v1/admin/adapters", json={"name": "a1", "path": str(dirs[1]["a1"])}, headers=AUTH
        )
        assert loaded.status_code == 201, loaded.text
        assert answers(client, (None, *names)) == before


def test_health_reports_a_model_that_fails_its_batches(dirs):
    app = build(dirs)
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"
        # Break the served model behind the registry's back, as the modules_to_save bug did.
        app.state.service.registry.loaded.model.load_adapter(str(dirs[1]["mts"]), adapter_name="mts")
        failed = client.post("/v1/summarize", json={"dialogue": DIALOGUES[0], "adapter": "a0"}, headers=AUTH)
        assert failed.status_code == 500 and "see the server log" in failed.json()["detail"]
        health = client.get("/health")
        assert health.status_code == 503, health.text
        body = health.json()
        assert body["status"] == "error" and "a0" in body["problem"] and body["failed_batches"] == 1


@pytest.mark.parametrize(
    "config, reason",
    [
        ({"peft_type": "IA3"}, "is a ia3 adapter; only lora adapters are served per request; merge it"),
        ({"use_dora": True}, "is a dora adapter"),
        (
            {"peft_type": "PROMPT_TUNING"},
            "prompt_tuning adapter; only lora adapters are served per request; "
            "evaluate or summarize it with --adapter",
        ),
        ({"modules_to_save": ["lm_head", "score"]}, "modules_to_save: lm_head, score"),
        ({"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
        ({"bias": "all"}, "biases (bias='all')"),
        ({"layer_replication": [[0, 2]]}, "layer_replication"),
        ({"target_parameters": ["experts.down_proj"]}, "target_parameters"),
    ],
)
def test_adapters_that_change_the_shared_base_are_named_by_their_config(config, reason):
    plain = {
        "peft_type": "LORA",
        "r": 8,
        "target_modules": ["q_proj"],
        "bias": "none",
        "modules_to_save": None,
    }
    assert registry_module.unservable_reason(plain) is None
    message = registry_module.unservable_reason({**plain, **config})
    assert message is not None and reason in message


def test_the_self_check_notices_a_silently_changed_base(dirs):
    registry = AdapterRegistry(load_model(SPEC, dtype="fp32"))
    registry.load("a0", dirs[1]["a0"])
    assert registry.check() is None
    with torch.no_grad():  # what an adapter training the base's own weights would do to everyone
        registry.loaded.model.get_base_model().model.norm.weight.mul_(1.5)
    problem = registry.check()
    assert problem is not None and registry.problem == problem
    assert "the base model answers differently" in problem and "adapter 'a0' answers differently" in problem


# -- 10: unencodable JSON ---------------------------------------------------------------

BAD_BODIES = [
    b'{"dialogue": "\\ud800"}',
    b'{"dialogue": "x", "adapter": "\\udfff"}',
    b'{"dialogue": "x", "\\ud800": 1}',
    b'{"dialogues": ["ok", "\\ud800x"]}',
    b'{"dialogue": NaN}',
    b'{"dialogue": "x", "options": {"temperature": NaN}}',
    b'{"dialogue": "x", "options": {"top_p": Infinity}}',
    b'{"dialogue": "x", "options": {"repetition_penalty": -Infinity}}',
    b'{"dialogue": "x", "options": {"top_p": 1e999}}',
    b'{"dialogue": "x", "options": {"max_new_tokens": 1e999}}',
    b'{"name": "\\ud800", "path": "x"}',
    b'{"name": "a", "path": "\\ud800"}',
    b'{"name": "a", "path": NaN}',
    b'{"name": "a", "path": "x", "extra": -1e400}',
]


@pytest.mark.parametrize("path", ["/v1/summarize", "/v1/admin/adapters"])
def test_unencodable_json_is_a_client_error_on_every_body_route(dirs, path):
    with TestClient(build(dirs), raise_server_exceptions=False) as client:
        for body in BAD_BODIES:
            response = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
            assert response.status_code in (400, 422), (body, response.status_code, response.text)
            assert response.headers["content-type"] == "application/json"
            assert "detail" in response.json()


# -- 13: cost bound, adapter files outside the root, adapter cap -------------------------


def test_request_cost_is_bounded(dirs):
    # tiny-llama's tokenizer has one token per byte: 2 dialogues of 100 tokens, 2 beams,
    # 10 new tokens cost 2 beams × 10 steps × (100 + 10 + 100 + 10) tokens = 4400 token-steps.
    payload = {"dialogues": ["x" * 100, "y" * 100], "options": {"num_beams": 2, "max_new_tokens": 10}}
    with TestClient(build(dirs, max_request_cost=4399)) as client:
        response = client.post("/v1/summarize", json=payload, headers=AUTH)
        assert response.status_code == 413, response.text
        detail = response.json()["detail"]
        assert "4400 token-steps" in detail and "max_request_cost" in detail and "4399" in detail
    with TestClient(build(dirs, max_request_cost=4400)) as client:
        assert client.post("/v1/summarize", json=payload, headers=AUTH).status_code == 200


def test_adapter_files_linked_from_outside_the_root_are_refused(dirs, tmp_path):
    root, found = dirs
    outside = tmp_path / "outside"
    shutil.copytree(found["a1"], outside)
    linked = root / "linked"  # a real folder under the root whose weights live elsewhere
    shutil.rmtree(linked, ignore_errors=True)
    linked.mkdir()
    for item in outside.iterdir():
        if item.name == "adapter_model.safetensors":
            (linked / item.name).symlink_to(item)
        else:
            shutil.copy(item, linked / item.name)
    with TestClient(build(dirs)) as client:
        response = client.post(
            "/v1/admin/adapters", json={"name": "linked", "path": str(linked)}, headers=AUTH
        )
        assert response.status_code == 403, response.text
        assert "adapter_model.safetensors" in response.json()["detail"]
        assert "outside" in response.json()["detail"]


def test_run_time_adapters_are_capped(dirs):
    with TestClient(build(dirs, ("a0",), max_adapters=2)) as client:
        ok = client.post("/v1/admin/adapters", json={"name": "a1", "path": str(dirs[1]["a1"])}, headers=AUTH)
        assert ok.status_code == 201, ok.text
        again = client.post(
            "/v1/admin/adapters", json={"name": "b", "path": str(dirs[1]["a1"])}, headers=AUTH
        )
        assert again.status_code == 409, again.text
        assert "max_adapters" in again.json()["detail"] and "2" in again.json()["detail"]
    with pytest.raises(ConfigError, match="max_adapters"):
        build(dirs, ("a0", "a1"), max_adapters=1)


def test_error_bodies_are_json_even_for_unexpected_failures(dirs):
    app = build(dirs)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("unexpected")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and "server log" in response.json()["detail"]
    assert json.loads(response.text)["detail"]
