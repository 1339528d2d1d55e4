"""One config layer: YAML and ``--set`` mean the same in ``train`` and ``run``; validating a config
needs no torch; ``evaluation/`` knows no model; an adapter's saved prompt is used unless a flag
says otherwise."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dialogtune.cli import main
from dialogtune.errors import ConfigError
from dialogtune.experiments import load_experiment
from dialogtune.experiments.runner import check_training_configs
from dialogtune.training import load_config

sys.path.insert(0, str(Path(__file__).parent))
from test_training import tiny_overrides  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dialogtune"

TRAINING = """\
model: random:tiny-llama
method: lora
data: {source: DATA, eval: {split: validation}}
eval: {strategy: epoch}
"""

# --set items as a user types them; each must give the same training config through train and run.
SET_CASES = [
    "eval.strategy=no",  # YAML 1.1 reads no as false; transformers' spelling is the string
    "training.learning_rate=1e-3",  # no dot: a string in YAML, a number here
    "lora.target_modules=[q_proj, v_proj]",
    "data.eval.limit=5",
    "prompt.chat=never",
    "training.fsdp=full_shard auto_wrap",
    "method=ia3",
    "ia3.target_modules=k_proj,down_proj",
    "training.compile=true",
]
BAD_SET_CASES = ["eval.strategy=off", "training.compile=yes", "method=qlora", "lora.r=0", "data.eval=null"]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    training = tmp_path / "train.yaml"
    training.write_text(TRAINING.replace("DATA", str(tmp_path / "data")))
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "exp"),
                "evaluation": {"data": {"source": str(tmp_path / "data"), "split": "validation"}},
                "variants": [{"name": "v", "config": str(training)}],
            }
        )
    )
    return training, experiment


def _via_train(training: Path, item: str) -> dict:
    config = load_config(training, [item, "output_dir=out"]).to_dict()
    return {k: v for k, v in config.items() if k not in ("output_dir", "prompt")}


def _via_run(experiment: Path, item: str) -> dict:
    config = check_training_configs(load_experiment(experiment, [f"variants.0.set.{item}"]))["v"].to_dict()
    return {k: v for k, v in config.items() if k not in ("output_dir", "prompt")}  # run sets both


@pytest.mark.parametrize("item", SET_CASES)
def test_set_means_the_same_in_train_and_run(files: tuple[Path, Path], item: str) -> None:
    training, experiment = files
    assert _via_train(training, item) == _via_run(experiment, item)


def test_the_issue_example_strategy_no(files: tuple[Path, Path]) -> None:
    training, experiment = files
    assert _via_train(training, "eval.strategy=no")["eval"]["strategy"] == "no"
    assert _via_run(experiment, "eval.strategy=no")["eval"]["strategy"] == "no"
    # ... and written unquoted in an experiment file, in an inline config and in its set mapping
    folder = training.parent
    inline = folder / "inline.yaml"
    inline.write_text(
        f"""\
output_dir: {folder / "exp"}
evaluation: {{data: {{source: {folder / "data"}, split: validation}}}}
variants:
  - name: a
    config: {{model: "random:tiny-llama", data: {{source: {folder / "data"}}}, eval: {{strategy: no}}}}
  - name: b
    config: {{model: "random:tiny-llama", data: {{source: {folder / "data"}}}}}
    set: {{eval: {{strategy: no}}, training.compile: true}}
"""
    )
    configs = check_training_configs(load_experiment(inline))
    assert configs["a"].eval.strategy == configs["b"].eval.strategy == "no"


@pytest.mark.parametrize("item", BAD_SET_CASES)
def test_bad_set_values_fail_the_same_way_in_train_and_run(files: tuple[Path, Path], item: str) -> None:
    training, experiment = files
    with pytest.raises(ConfigError) as in_train:
        _via_train(training, item)
    with pytest.raises(ConfigError) as in_run:
        _via_run(experiment, item)
    assert str(in_train.value) == str(in_run.value) and "\n" not in str(in_train.value)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("item", SET_CASES)
def test_set_cases_through_train_and_run_dry_run(
    files: tuple[Path, Path], item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The verbs a user types: ``train --print-config --set X`` prints the config the API builds, and
    ``run --dry-run --set variants.0.set.X`` validates the same variant with the same method."""
    training, experiment = files
    code, out, err = _cli(
        ["train", str(training), "--print-config", "--set", item, "--set", "output_dir=out"], capsys
    )
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert {k: v for k, v in printed.items() if k not in ("output_dir", "prompt")} == _via_train(
        training, item
    )
    code, out, err = _cli(["run", str(experiment), "--dry-run", "--set", f"variants.0.set.{item}"], capsys)
    assert code == 0, err
    assert f"# v: {printed['method']} on random:tiny-llama, training config valid" in out


@pytest.mark.parametrize("item", BAD_SET_CASES)
def test_bad_set_values_are_the_same_one_line_error_in_train_and_run_dry_run(
    files: tuple[Path, Path], item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    training, experiment = files
    train = _cli(["train", str(training), "--print-config", "--set", item], capsys)
    run = _cli(["run", str(experiment), "--dry-run", "--set", f"variants.0.set.{item}"], capsys)
    for code, out, err in (train, run):
        assert code == 2 and not out and err.count("\n") == 1 and err.startswith("dialogtune: error: "), err
    assert train[2] == run[2]


def test_the_study_can_be_made_smaller_per_variant() -> None:
    """The lead may run experiments/peft-methods.yaml on fewer dialogues: the evaluation limit and each
    variant's training dialogues are overrides, and they change only what they name."""
    names = ["full", "lora-r8", "lora-r16", "lora-r32", "dora-r16", "ia3", "prompt-tuning"]
    path = ROOT / "experiments/peft-methods.yaml"
    shipped = check_training_configs(load_experiment(path))
    overrides = ["evaluation.data.limit=4", "variants.lora-r8.set.data.train.every=30"]
    overrides += [f"variants.{name}.set.training.max_steps=2" for name in names]
    experiment = load_experiment(path, overrides)
    configs = check_training_configs(experiment)
    assert experiment.evaluation.data.limit == 4 and list(configs) == names
    assert configs["lora-r8"].data.train.every == 30 != shipped["lora-r8"].data.train.every
    for name, config in configs.items():
        assert config.training.max_steps == 2 and config.data.eval is None
        assert config.data.train.split == "train" and config.data.train.every == (
            30 if name == "lora-r8" else shipped[name].data.train.every
        )
        before = shipped[name].to_dict()
        after = config.to_dict()
        for key in ("method", "model", "prompt"):
            assert after[key] == before[key]
        assert after["training"] == {**before["training"], "max_steps": 2}
    ranks = {n: c.method_settings.r for n, c in configs.items() if c.method in ("lora", "dora")}
    assert ranks == {"lora-r8": 8, "lora-r16": 16, "lora-r32": 32, "dora-r16": 16}


def test_the_issue_example_runs_dry_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(ROOT / "experiments/quickstart.yaml"), "--set", "variants.0.set.eval.strategy=no"]
    assert main([*args, "--dry-run"]) == 0
    assert "training config valid" in capsys.readouterr().out


def test_evaluation_dtype_points_to_generation_precision(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("evaluation: {dtype: bf16}\n")
    with pytest.raises(ConfigError, match=r"^evaluation.dtype is now evaluation.generation.precision"):
        load_experiment(path)


def test_validating_configs_does_not_import_torch() -> None:
    """``run --dry-run`` and ``train --print-config`` read, check and print configs: no torch."""
    code = (
        "import sys, contextlib, io\n"
        "from dialogtune.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['run', {str(ROOT / 'experiments/peft-methods.yaml')!r}, '--dry-run']) == 0\n"
        f"    assert main(['train', {str(ROOT / 'configs/smollm2-lora-cpu.yaml')!r}, '--print-config',"
        " '--set', 'method=prompt_tuning']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_evaluation_imports_no_model_code() -> None:
    """``evaluation/`` is the metric package: strings in, scores out. Statically (every import in
    its files, lazy ones too) and at run time (importing all of it loads no torch)."""
    forbidden = ("dialogtune.models", "dialogtune.generation", "dialogtune.predict", "dialogtune.training",
                 "dialogtune.experiments", "torch", "transformers", "peft")  # fmt: skip
    modules = sorted(p.stem for p in (SRC / "evaluation").glob("*.py") if p.stem != "__init__")
    for name in modules:
        tree = ast.parse((SRC / "evaluation" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported = [node.module or ""]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            else:
                continue
            bad = [m for m in imported if m.startswith(forbidden)]
            assert not bad, f"evaluation/{name}.py imports {bad}"
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module('dialogtune.evaluation.' + name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.usefixtures("one_torch_thread")
def test_an_adapters_saved_prompt_is_used_unless_a_flag_overrides_it(tmp_path: Path) -> None:
    from dialogtune.generation import GenerationSettings, generate
    from dialogtune.io import read_jsonl
    from dialogtune.models.inference import load_for_inference
    from dialogtune.prompts import PromptTemplate
    from dialogtune.training import train

    trained_with = "Recap this chat.\n{dialogue}\nRecap: "
    overrides = tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=2")
    result = train(
        load_config(None, [*overrides, f"prompt.template={json.dumps(trained_with)}"]), progress=False
    )
    adapter = str(result.run_dir / "adapter")
    data = str(tmp_path / "data")
    common = ["--adapter", adapter, "--data", data, "--precision", "fp32", "--max-new-tokens", "8"]
    loaded = load_for_inference(result.loaded.spec.raw, adapter=adapter, precision="fp32")
    records = [row["dialogue"] for row in read_jsonl(Path(data) / "validation.jsonl")]

    def expected(template: str) -> list[str]:
        # the contract's lengths too: dialogues cut to data.max_dialogue_tokens (96) as in training
        settings = GenerationSettings(max_new_tokens=8, max_dialogue_tokens=96, precision="fp32")
        return generate(loaded, records, settings, PromptTemplate(template=template)).texts

    assert expected(trained_with) != expected(PromptTemplate().template)  # the prompt makes a difference

    # No --model and no prompt flag: the base model and the prompt come from the adapter's contract.
    assert main(["generate", *common, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert [r["prediction"] for r in read_jsonl(tmp_path / "a.jsonl")] == expected(trained_with)
    assert main(["evaluate", *common, "--output-dir", str(tmp_path / "eval-a")]) == 0
    saved = yaml.safe_load((tmp_path / "eval-a" / "config.yaml").read_text())
    assert saved["prompt"]["template"] == trained_with and saved["model"] == result.loaded.spec.raw

    # An explicit --prompt-template wins over the contract.
    other = "{dialogue}\nIn short: "
    assert main(["generate", *common, "--prompt-template", other, "--output", str(tmp_path / "b.jsonl")]) == 0
    assert [r["prediction"] for r in read_jsonl(tmp_path / "b.jsonl")] == expected(other)
    assert (
        main(["evaluate", *common, "--prompt-template", other, "--output-dir", str(tmp_path / "eval-b")]) == 0
    )
    assert yaml.safe_load((tmp_path / "eval-b" / "config.yaml").read_text())["prompt"]["template"] == other
