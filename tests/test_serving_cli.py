"""``dialogtune serve``: the limits reach the server, and unservable adapters stop it in one line."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from peft import LoraConfig, get_peft_model

from dialogtune.cli import main
from dialogtune.models import load_model
from dialogtune.models.adapters import write_base_info
from dialogtune.serving import ServingConfig
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = "random:tiny-llama"


@pytest.fixture
def served(monkeypatch):
    """Run ``serve`` up to the point where uvicorn would start; return what it would run."""
    import uvicorn

    access = logging.getLogger("dialogtune.serving.access")
    saved = (access.handlers[:], access.propagate, access.level, logging.getLogger().level)
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    yield seen
    access.handlers[:], access.propagate = saved[0], saved[1]  # serve set up logging for its own process
    access.setLevel(saved[2])
    logging.getLogger().setLevel(saved[3])


def test_flags_default_to_serving_config_and_reach_the_server(served):
    assert main(["serve", "--model", SPEC, "--port", "0"]) == 0
    config = served["app"].state.service.config
    skip = {"api_token", "adapter_root", "template"}  # not limits: token from the environment, ...
    for field in dataclasses.fields(ServingConfig):
        if field.name not in skip:
            assert getattr(config, field.name) == field.default, field.name  # --help shows the real defaults
    flags = [
        "--max-request-cost",
        "5000",
        "--max-adapters",
        "3",
        "--max-connections",
        "7",
        "--body-timeout",
        "2.5",
    ]
    assert main(["serve", "--model", SPEC, "--port", "0", *flags]) == 0
    config = served["app"].state.service.config
    assert (config.max_request_cost, config.max_adapters, config.max_connections) == (5000, 3, 7)
    assert config.body_timeout_s == 2.5
    assert served["limit_concurrency"] == config.uvicorn_options()["limit_concurrency"] > 7


def test_unservable_adapters_stop_the_server_in_one_line(served, tmp_path, capsys):
    loaded = load_model(SPEC)
    model = get_peft_model(
        loaded.model, LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"])
    )
    model.save_pretrained(str(tmp_path / "mts"))
    loaded.model = model
    write_base_info(tmp_path / "mts", loaded)
    good = [f"a{i}={make_random_adapter(SPEC, tmp_path / f'a{i}', seed=i)}" for i in range(2)]
    cases = [
        (["--adapter", f"x={tmp_path / 'mts'}"], "replaces whole modules (modules_to_save: lm_head)"),
        (["--adapter", good[0], "--adapter", good[1], "--max-adapters", "1"], "max_adapters"),
        (["--body-timeout", "0"], "serving.body_timeout_s must be"),
        (["--body-timeout", "nan"], "serving.body_timeout_s must be"),
    ]
    for extra, message in cases:
        assert main(["serve", "--model", SPEC, "--port", "0", *extra]) == 2, extra
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (extra, err)
    assert "app" not in served  # the server never started


def test_without_model_the_base_comes_from_the_adapters_contracts(served, tmp_path, capsys):
    """``serve --adapter a=DIR`` with no ``--model`` serves the base the adapter was trained on
    (its saved contract); adapters trained on different bases are a one-line error."""
    from dialogtune.models.contract import InferenceContract, write_contract

    adapter = make_random_adapter(SPEC, tmp_path / "a", seed=1)
    write_contract(adapter, InferenceContract(base_model=SPEC, method="lora"))
    assert main(["serve", "--adapter", f"a={adapter}", "--port", "0"]) == 0
    registry = served["app"].state.service.registry
    assert registry.loaded.spec.raw == SPEC and "a" in registry  # not the default model
    other = make_random_adapter("random:tiny-t5", tmp_path / "b", seed=2)
    write_contract(other, InferenceContract(base_model="random:tiny-t5", method="lora"))
    capsys.readouterr()
    assert main(["serve", "--adapter", f"a={adapter}", "--adapter", f"b={other}", "--port", "0"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
    assert len(errors) == 1 and "different base models" in errors[0] and "--model" in errors[0], err
    # --model decides when given, whatever the contracts say
    assert main(["serve", "--model", SPEC, "--adapter", f"a={adapter}", "--port", "0"]) == 0


def test_a_bf16_server_decides_near_ties_in_fp32_with_and_without_merged_adapter(served, tmp_path):
    from dialogtune.models.logits import logits_refined

    adapter = make_random_adapter(SPEC, tmp_path / "a", seed=1)
    assert (
        main(["serve", "--model", SPEC, "--port", "0", "--precision", "bf16", "--adapter", f"a={adapter}"])
        == 0
    )
    loaded = served["app"].state.service.registry.loaded
    assert loaded.precision == "bf16" and logits_refined(loaded.model)  # per-row adapters, unmerged
    assert (
        main(
            [
                "serve",
                "--model",
                SPEC,
                "--port",
                "0",
                "--precision",
                "bf16",
                "--merged",
                "--adapter",
                f"a={adapter}",
            ]
        )
        == 0
    )
    assert logits_refined(served["app"].state.service.registry.loaded.model)
    assert main(["serve", "--model", SPEC, "--port", "0", "--precision", "fp32"]) == 0
    assert not logits_refined(served["app"].state.service.registry.loaded.model)  # fp32: nothing to refine
