"""``dialogtune evaluate --endpoint``: scoring a model served behind an OpenAI-compatible API.

Tested against dialogtune's own server (uvicorn on loopback, a tiny random Llama in fp32): the
predictions equal a local evaluation's, for the base and for an adapter; an interrupted run
resumes; an unreachable endpoint, a wrong model name or a missing key is one line.
"""

from __future__ import annotations

import json
import socket

import pytest
from test_serving_load import running_server

from dialogtune.cli import main
from dialogtune.experiments.endpoint import EndpointModel
from dialogtune.models import load_model
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "endpoint-test-token"
BASE = "random:tiny-llama"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return str(make_random_adapter(BASE, tmp_path_factory.mktemp("endpoint") / "a0", seed=5))


@pytest.fixture(scope="module")
def endpoint(adapter_dir):
    registry = AdapterRegistry(load_model(BASE, dtype="fp32"))
    registry.load("support", adapter_dir)
    app = create_app(registry, ServingConfig(api_token=TOKEN))
    with running_server(app) as (base_url, _, _):
        yield base_url + "/v1"


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("ENDPOINT_TEST_KEY", TOKEN)
    return ["--endpoint-key-env", "ENDPOINT_TEST_KEY"]


def evaluate(dialogsum_dir, out, *extra: str) -> int:
    common = ["--data", str(dialogsum_dir), "--split", "validation", "--limit", "6"]
    args = ["evaluate", "--model", BASE, *common, "--max-new-tokens", "12", "--n-resamples", "20"]
    return main([*args, "--output-dir", str(out), *extra])


def rows(run) -> list[dict]:
    lines = (run / "predictions" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("adapter", [False, True], ids=["base", "adapter"])
def test_endpoint_predictions_equal_a_local_evaluation(
    dialogsum_dir, tmp_path, endpoint, token_env, adapter, adapter_dir
):
    served = ["--adapter", adapter_dir, "--endpoint-model", "support"] if adapter else []
    assert evaluate(dialogsum_dir, tmp_path / "remote", "--endpoint", endpoint, *token_env, *served) == 0
    loaded_alone = ["--adapter", adapter_dir, "--merge", "no"] if adapter else []
    assert evaluate(dialogsum_dir, tmp_path / "local", "--precision", "fp32", *loaded_alone) == 0
    remote, here = rows(tmp_path / "remote"), rows(tmp_path / "local")
    assert [r["prediction"] for r in remote] == [r["prediction"] for r in here]
    assert [r["scores"] for r in remote] == [r["scores"] for r in here]
    assert len({r["prediction"] for r in remote}) > 1  # real, varied outputs
    metrics = json.loads((tmp_path / "remote" / "metrics" / "validation.json").read_text())
    local_metrics = json.loads((tmp_path / "local" / "metrics" / "validation.json").read_text())
    assert metrics["rouge1"] == local_metrics["rouge1"] and metrics["n"] == 6
    assert metrics["model"]["endpoint"] == endpoint
    assert metrics["model"]["endpoint_model"] == ("support" if adapter else BASE)
    assert metrics["generation"]["endpoint"] == endpoint and metrics["generation"]["prompt_tokens"] > 0
    config = (tmp_path / "remote" / "config.yaml").read_text()
    assert f"url: {endpoint}" in config
    metadata = json.loads((tmp_path / "remote" / "metadata.json").read_text())
    assert metadata["parameters"] is None  # nothing was loaded here
    # A rerun with the same settings reuses the finished evaluation.
    assert evaluate(dialogsum_dir, tmp_path / "remote", "--endpoint", endpoint, *token_env, *served) == 0


def test_an_interrupted_endpoint_evaluation_resumes(
    dialogsum_dir, tmp_path, endpoint, token_env, monkeypatch, capsys
):
    calls: list[list[int]] = []
    real = EndpointModel.complete

    def failing(self, prompt, settings):
        calls.append(prompt)
        if len(calls) == 4:
            from dialogtune.errors import DialogtuneError

            raise DialogtuneError("the endpoint went away")
        return real(self, prompt, settings)

    monkeypatch.setattr(EndpointModel, "complete", failing)
    out = tmp_path / "run"
    flags = ["--endpoint", endpoint, *token_env, "--concurrency", "1"]
    assert evaluate(dialogsum_dir, out, *flags) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "dialogtune: error: the endpoint went away"
    partial = out / "predictions" / "validation.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 1 + 3  # the key, then the three finished rows
    calls.clear()
    monkeypatch.setattr(EndpointModel, "complete", real)
    assert evaluate(dialogsum_dir, out, *flags) == 0
    assert not partial.exists()
    metrics = json.loads((out / "metrics" / "validation.json").read_text())
    assert metrics["generation"]["resumed"] == 3
    assert evaluate(dialogsum_dir, tmp_path / "clean", *flags) == 0
    assert rows(out) == rows(tmp_path / "clean")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_endpoint_problems_are_one_line(dialogsum_dir, tmp_path, endpoint, token_env, adapter_dir, capsys):
    cases = [
        (["--endpoint", f"http://127.0.0.1:{_closed_port()}/v1"], "cannot reach the endpoint"),
        (
            ["--endpoint", endpoint, *token_env, "--endpoint-model", "nope"],
            "does not serve a model named 'nope'",
        ),
        (["--endpoint", endpoint], "answered 401"),
        (["--endpoint", endpoint.removesuffix("/v1"), *token_env], "the URL should end in /v1"),
        (["--endpoint", endpoint, *token_env, "--adapter", adapter_dir], "--endpoint-model"),
        (["--endpoint", endpoint, *token_env, "--do-sample"], "greedy"),
        (["--endpoint", "ftp://example.org/v1"], "http:// or https://"),
    ]
    for i, (flags, expected) in enumerate(cases):
        assert evaluate(dialogsum_dir, tmp_path / f"run{i}", *flags) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("dialogtune: error: ") and expected in err[-1], (flags, err)
        assert "Traceback" not in "\n".join(err)
