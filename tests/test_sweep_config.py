"""The sweep file and its search space: parsing, validation against the training config, and the
one-line errors of a bad sweep (no training here; see test_sweep.py for sweeps that run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dialogtune.cli import main
from dialogtune.errors import ConfigError
from dialogtune.sweep import check_sweep, load_sweep, parse_space
from dialogtune.training import load_config

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "model": "random:tiny-llama",
    "method": "lora",
    "data": {"source": "data", "eval": {"split": "validation", "limit": 4}},
    "training": {"max_steps": 8, "batch_size": 8, "precision": "fp32"},
    "lora": {"r": 4, "alpha": 8},
    "eval": {"strategy": "steps", "steps": 4, "metric": "loss", "load_best": False},
}


def write_sweep(folder: Path, base_config: dict[str, Any] | None = None, **sweep: Any) -> Path:
    """base.yaml + sweep.yaml in ``folder``; ``sweep`` keys replace the defaults below."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(base_config or BASE))
    spec = {
        "name": "t",
        "base": "base.yaml",
        "space": {"training.learning_rate": {"log_uniform": [1e-4, 1e-2]}},
        "objective": {"metric": "loss"},
        "trials": 4,
        "output_dir": str(folder / "out"),
        **sweep,
    }
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    return folder / "sweep.yaml"


def test_space_spellings_and_values() -> None:
    nested = parse_space(
        {"lora": {"r": {"choice": [8, 16]}}, "training.learning_rate": {"uniform": [0.1, 0.2]}}
    )
    dotted = parse_space(
        {"lora.r": {"choice": [8, 16]}, "training": {"learning_rate": {"uniform": [0.1, 0.2]}}}
    )
    assert (
        sorted(p.key for p in nested) == sorted(p.key for p in dotted) == ["lora.r", "training.learning_rate"]
    )
    (targets,) = parse_space({"lora.target_modules": {"choice": [["q_proj", "v_proj"], "all-linear"]}})
    # Lists cannot be Optuna choices: stored under a label, decoded to the exact YAML value.
    assert targets.labels == ('["q_proj","v_proj"]', '"all-linear"')
    assert targets.decode('["q_proj","v_proj"]') == ["q_proj", "v_proj"]
    assert targets.encode("all-linear") == '"all-linear"'
    (rank,) = parse_space({"lora.r": {"int": [4, 32]}})
    assert rank.distribution().low == 4 and rank.distribution().high == 32
    with pytest.raises(ConfigError, match="outside space.lora.r"):
        rank.encode(64)


def test_sweep_file_loads_with_overrides(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, set={"training": {"batch_size": 4}}, budget={"steps": 6})
    config = load_sweep(path, ["trials=9", "set.data.max_target_tokens=24", "space.lora.r={choice: [2, 4]}"])
    assert config.trials == 9
    assert config.set == {"training.batch_size": 4, "data.max_target_tokens": 24}
    assert [p.key for p in config.params] == ["training.learning_rate", "lora.r"]
    assert config.objective.direction == "minimize"
    fixed = check_sweep(config)
    assert (fixed.training.max_steps, fixed.training.batch_size, fixed.data.max_target_tokens) == (6, 4, 24)
    trial = config.trial_config({"training.learning_rate": 1e-3, "lora.r": 2}, tmp_path / "x")
    assert (trial.training.learning_rate, trial.lora.r, trial.output_dir) == (1e-3, 2, str(tmp_path / "x"))


BAD = [
    (
        {"space": {"training.lerning_rate": {"log_uniform": [1e-4, 1e-2]}}},
        "space.training.lerning_rate: unknown key training.lerning_rate; did you mean training.learning_rate?",
    ),
    ({"space": {"lora.r": {"normal": [8, 2]}}}, "space.lora.r: unknown distribution 'normal'"),
    ({"space": {"training.warmup_steps": {"uniform": [0.1, 0.1]}}}, "low must be below high, got [0.1, 0.1]"),
    ({"space": {"training.learning_rate": {"log_uniform": [0, 1e-2]}}}, "log_uniform needs low > 0"),
    ({"space": {"lora.r": {"choice": []}}}, "space.lora.r: choice needs a non-empty list"),
    ({"space": {"lora.r": {"choice": [8, 8]}}}, "choice lists a value twice"),
    ({"space": {"lora.r": 8}}, "space.lora.r must be one distribution"),
    ({"space": {"lora.r": {"int": [4, 8.5]}}}, "int needs integer bounds"),
    ({"space": {"lora.r": {"uniform": [4, 32]}}}, "lora.r must be an integer"),
    ({"space": {"lora.r": {"choice": [0, 8]}}}, "the value 0 does not make a valid training config"),
    ({"space": {}}, "space is empty"),
    ({"objective": {"metric": "bleu"}}, "objective.metric must be loss or one of rouge1"),
    ({"objective": {"metric": "loss", "direction": "maximize"}}, "loss is to minimize"),
    ({"objective": {"metric": "rouge1"}}, "needs the ROUGE probe: set eval.rouge_dialogues"),
    ({"set": {"eval.strategy": "no"}}, "needs evaluations: set eval.strategy"),
    ({"set": {"training.learning_rate": 1e-3}}, "training.learning_rate is both fixed (set) and searched"),
    ({"set": {"training.max_steps": 5}, "budget": {"steps": 5}}, "budget.steps sets training.max_steps"),
    ({"space": {"output_dir": {"choice": ["a", "b"]}}}, "output_dir is chosen by the sweep"),
    ({"start_with": [{"training.learning_rate": 1.0}]}, "start_with[0]: 1.0 is outside"),
    ({"base": "missing.yaml"}, "base: training config not found: missing.yaml"),
    ({"pruner": {"kind": "hyperband"}}, "pruner.kind must be median, successive_halving or none"),
]


@pytest.mark.parametrize(("sweep", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_sweep_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sweep: dict[str, Any], message: str
) -> None:
    path = write_sweep(tmp_path, **sweep)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: ") and err.count("\n") == 1, err
    assert message in err


def test_dry_run_validates_without_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(
        tmp_path, space={"lora.r": {"choice": [2, 4]}, "lora.dropout": {"uniform": [0.0, 0.2]}}
    )
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "2 keys searched" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_shipped_sweeps_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # their base configs name data relative to the repo root
    files = sorted((REPO / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        config = load_sweep(path)
        fixed = check_sweep(config)
        assert config.base_path().is_file() and fixed.eval.enabled
        # best.yaml is a training config; the shipped base loads on its own too
        assert load_config(config.base_path()).model == fixed.model


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--storage", "nosuchdb://host/x"], "storage nosuchdb://host/x: "),
        (["--storage", "postgresql://sweeper:secret@db.invalid/sweeps"], "storage postgresql://sweeper:***@"),
        (["--trials", "0"], "--trials must be a positive integer"),
    ],
)
def test_bad_storage_or_trials_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: ") and err.count("\n") == 1, err
    assert message in err and "secret" not in err
