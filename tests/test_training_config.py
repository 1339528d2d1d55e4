"""Training configs: every shipped YAML loads and validates; bad keys and values are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialogtune.cli import main
from dialogtune.errors import ConfigError
from dialogtune.training import TrainConfig, load_config
from dialogtune.training.config import apply_overrides, parse_yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_the_required_configs_are_shipped() -> None:
    names = {p.name for p in CONFIGS}
    assert {"flan-t5-base-full.yaml", "flan-t5-base-lora.yaml", "smollm2-lora-cpu.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    raw = parse_yaml(path.read_text())
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    # Every key written in the file is a real key (a typo would have raised) and was kept.
    assert set(raw) <= set(config.to_dict())
    assert config.method == raw["method"] and config.data.data_config("train").split


def test_notebook_settings() -> None:
    full = load_config(CONFIGS[0].parent / "flan-t5-base-full.yaml")
    lora = load_config(CONFIGS[0].parent / "flan-t5-base-lora.yaml")
    assert full.model == lora.model == "google/flan-t5-base"
    assert (
        full.method == "full" and full.training.learning_rate == 1e-5 and full.training.weight_decay == 0.01
    )
    assert lora.method == "lora" and lora.training.learning_rate == 1e-3
    assert (lora.lora.r, lora.lora.alpha, lora.lora.dropout, lora.lora.target_modules) == (
        32,
        32,
        0.05,
        ["q", "v"],
    )
    assert (
        full.training.precision == lora.training.precision == "auto"
    )  # resolves to bf16 or fp32, never fp16


def test_overrides_are_parsed_as_yaml_1_2() -> None:
    raw = apply_overrides(
        {"training": {"batch_size": 8}},
        ["training.learning_rate=1e-3", "eval.strategy=no", "lora.target_modules=[q, v]", "data.eval=null"],
    )
    assert raw == {
        "training": {"batch_size": 8, "learning_rate": "1e-3"},
        "eval": {"strategy": "no"},
        "lora": {"target_modules": ["q", "v"]},
        "data": {"eval": None},
    }
    config = load_config(None, ["training.learning_rate=1e-3", "eval.strategy=no", "data.eval=null"])
    assert (
        config.training.learning_rate == 0.001 and config.eval.strategy == "no" and config.data.eval is None
    )
    # A split left out defaults by role: train for data.train, validation for data.eval.
    config = load_config(None, ["data.eval=null", "data.eval.limit=5", "data.train={every: 10}"])
    assert (config.data.eval.split, config.data.eval.limit) == ("validation", 5)
    assert (config.data.train.split, config.data.train.every) == ("train", 10)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["training.lerning_rate=1"],
            "unknown key training.lerning_rate; did you mean training.learning_rate?",
        ),
        (["bogus=1"], "unknown key bogus"),
        (["training.batch_size=abc"], "training.batch_size must be an integer"),
        (["training.batch_size=0"], "training.batch_size has an invalid value"),
        (["training.learning_rate=fast"], "training.learning_rate must be a number"),
        (["training.gradient_checkpointing=yes"], "training.gradient_checkpointing must be true or false"),
        (["method=qlora"], "method must be one of full, lora, dora, ia3, prompt_tuning"),
        (["lora.r=0"], "lora.r must be a positive integer"),
        (["data.train.limit=0"], "data.train.limit must be a positive integer"),
        (["eval.generation.top_p=2"], "eval.generation.top_p has an invalid value"),
        (["eval.metric=rouge1"], "eval.metric=rouge1 needs eval.rouge_dialogues"),
        (["eval.strategy=steps"], "eval.steps must be a positive integer"),
        (["data.eval=null"], "eval.strategy needs data.eval"),
        (["eval.early_stopping_patience=2", "eval.load_best=false"], "early_stopping_patience needs"),
        (["prompt.template=no placeholder"], "prompt.template must contain"),
        (["training"], "--set expects key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, sets)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_relative_data_source_resolves_against_the_cwd(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "main").mkdir()
    monkeypatch.chdir(tmp_path / "main")
    config = load_config(None, ["data.source=../shared/data", "output_dir=runs/x"])
    assert config.data.source == str(tmp_path / "shared" / "data")
    assert config.output_dir == str(tmp_path / "main" / "runs" / "x")
    assert load_config(None, []).data.source == "knkarthick/dialogsum"  # hub ids are left alone


def test_cli_print_config_and_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["train", str(CONFIGS[0]), "--set", "training.epochs=2", "--print-config"]) == 0
    printed = parse_yaml(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 2.0 and printed["model"] == "google/flan-t5-base"
    for args, message in [
        ([str(tmp_path / "missing.yaml")], "config file not found"),
        ([str(CONFIGS[0]), "--set", "training.epoch=2"], "unknown key training.epoch"),
    ]:
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    assert main(["train", str(bad)]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err


def test_precision_resolution_never_gives_t5_fp16() -> None:
    from dialogtune.training.recipe import resolve_precision

    assert resolve_precision("fp32", "t5", use_cuda=False) == "fp32"
    assert resolve_precision("auto", "t5", use_cuda=False) in ("bf16", "fp32")
    with pytest.raises(ConfigError, match="overflows in T5"):
        resolve_precision("fp16", "t5", use_cuda=True)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve_precision("fp16", "llama", use_cuda=False)
