"""Experiment configs: shipped files load, bad keys and values are one-line errors, --set works."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dialogtune.cli import main
from dialogtune.errors import ConfigError
from dialogtune.experiments import load_experiment
from dialogtune.experiments.runner import check_training_configs, stage_key

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))

MINIMAL = {
    "name": "t",
    "output_dir": "runs/t",
    "evaluation": {"data": {"source": "some/dataset", "split": "validation", "limit": 4}},
    "baseline": {"name": "zero-shot", "model": "random:tiny-llama"},
    "variants": [
        {
            "name": "lora",
            "config": {"model": "random:tiny-llama", "method": "lora", "eval": {"strategy": "no"}},
            "set": {"lora.r": 4},
        }
    ],
}


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _with(**changes: object) -> dict:
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))  # deep copy
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value
    return config


def test_shipped_experiments_exist() -> None:
    assert {p.name for p in EXPERIMENTS} >= {"notebook.yaml", "quickstart.yaml"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_loads_with_its_training_configs(path: Path) -> None:
    experiment = load_experiment(path)
    assert experiment.baseline.model and not experiment.baseline.trains
    assert experiment.variants and all(v.trains for v in experiment.variants)
    configs = check_training_configs(experiment)  # files found relative to the experiment, all valid
    assert set(configs) == {v.name for v in experiment.variants}
    for config in configs.values():
        assert config.prompt == experiment.evaluation.prompt  # trained as evaluated
        assert Path(config.output_dir).parts[-2:-1] == ("train",)


def test_notebook_experiment_is_the_notebooks_study() -> None:
    experiment = load_experiment(EXPERIMENTS[[p.name for p in EXPERIMENTS].index("notebook.yaml")])
    assert experiment.baseline.model == "google/flan-t5-base"
    assert experiment.evaluation.data.source == "knkarthick/dialogsum"
    assert (
        experiment.evaluation.generation.max_new_tokens == 200
        and experiment.evaluation.generation.num_beams == 1
    )
    methods = {name: config.method for name, config in check_training_configs(experiment).items()}
    assert sorted(methods.values()) == ["full", "lora"]


def test_minimal_config_loads(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, MINIMAL))
    assert [m.name for m in experiment.models] == ["zero-shot", "lora"]
    assert experiment.variants[0].set == {"lora.r": 4}
    assert check_training_configs(experiment)["lora"].lora.r == 4


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_with(evaluaton={}), "unknown key evaluaton; did you mean evaluation?"),
        (_with(evaluation__generation__max_new_token=5), "evaluation.generation.max_new_token"),
        (_with(evaluation__data__limit=0), "data.limit must be a positive integer"),
        (_with(evaluation__generation__max_new_tokens=0), "generation.max_new_tokens has an invalid value"),
        (_with(evaluation__rouge__lsum_split="words"), "lsum_split"),
        (_with(evaluation__n_resamples=0), "evaluation.n_resamples"),
        (_with(variants__0__confg="x.yaml"), "unknown key variants[0].confg"),
        (
            _with(variants__0__model="random:tiny-llama"),
            "exactly one of model (zero-shot) or config (trained)",
        ),
        (_with(baseline={"name": "b"}), "exactly one of model"),
        (_with(baseline__name="zero/shot"), "directory name"),
        (_with(variants__0__name="zero-shot"), "used twice"),
        (_with(variants__0__config=5), "config must be a YAML path or a mapping"),
        (_with(report__examples=-1), "report.examples"),
        (
            _with(variants=[{"name": "z", "model": "m", "set": {"lora.r": 2}}]),
            "set overrides a training config",
        ),
        (_with(variants=[{"name": "v", "config": "does-not-exist.yaml"}]), "training config not found"),
        (
            _with(variants=[{"name": "v", "config": {"method": "lora", "lerning_rate": 1}}]),
            "unknown key lerning_rate",
        ),
        (
            _with(variants=[{"name": "v", "config": {"method": "dpo"}}]),
            "method must be one of full, lora, dora, ia3, prompt_tuning",
        ),
        (_with(variants__0__set={"training.batch_size": 0}), "training.batch_size"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors(tmp_path: Path, config: dict, message: str) -> None:
    path = _write(tmp_path, config)
    with pytest.raises(ConfigError) as caught:
        check_training_configs(load_experiment(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cli_prints_one_line_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_write(tmp_path, _with(evaluaton={})))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: unknown key evaluaton") and err.count("\n") == 1
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "experiment file not found" in capsys.readouterr().err


def test_set_overrides_reach_nested_keys_and_list_items(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    experiment = load_experiment(
        path,
        [
            "evaluation.data.limit=7",
            "evaluation.generation.num_beams=2",
            "variants.lora.set.training.max_steps=3",  # nested spelling of set's dotted keys
            "variants.0.set.lora.alpha=16",
            "baseline.model=random:tiny-t5",
            "output_dir=elsewhere",
        ],
    )
    assert experiment.evaluation.data.limit == 7 and experiment.evaluation.generation.num_beams == 2
    assert experiment.variants[0].set == {"lora.r": 4, "training.max_steps": 3, "lora.alpha": 16}
    assert experiment.baseline.model == "random:tiny-t5" and experiment.output_dir == "elsewhere"
    trained = check_training_configs(experiment)["lora"]
    assert (trained.training.max_steps, trained.lora.alpha, trained.lora.r) == (3, 16, 4)
    with pytest.raises(ConfigError, match="no item 'nope'"):
        load_experiment(path, ["variants.nope.set.lora.r=2"])
    with pytest.raises(ConfigError, match="expects key=value"):
        load_experiment(path, ["evaluation.data.limit"])


def test_stage_key_is_stable_and_order_free() -> None:
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})
