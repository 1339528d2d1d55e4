"""`dialogtune run`: stages are trained/evaluated once, reused on rerun, rerun only when affected.

A real (tiny) experiment: random-weights Llama zero-shot vs a LoRA variant trained for 2 steps,
on a handful of short dialogues written here. Counters wrap the real training and evaluation
functions; file modification times confirm nothing was rewritten.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

import dialogtune.experiments.evaluate as evaluation_run
import dialogtune.training as training
from dialogtune.cli import main
from dialogtune.experiments import load_experiment, run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    names = ["Tom", "Ann", "Bob", "Eve"]
    for split, n in (("train", 8), ("validation", 4)):
        with (folder / f"{split}.jsonl").open("w") as handle:
            for i in range(n):
                name = names[i % 4]
                row = {
                    "id": f"{split}-{i}",
                    "dialogue": f"#Person1#: Tea, {name}?\n#Person2#: Yes, {i} cups.",
                    "summary": f"#Person2# wants {i} cups of tea.",
                }
                handle.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture
def experiment_file(tmp_path: Path, data_dir: Path) -> Path:
    lora = {
        "model": "random:tiny-llama",
        "method": "lora",
        "data": {
            "source": str(data_dir),
            "train": {"split": "train"},
            "eval": None,
            "max_dialogue_tokens": 64,
            "max_target_tokens": 16,
        },
        "training": {
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-2,
            "precision": "fp32",
            "logging_steps": 1,
        },
        "lora": {"r": 4, "alpha": 8},
        "eval": {"strategy": "no"},
    }
    experiment = {
        "name": "tiny",
        "output_dir": str(tmp_path / "exp"),
        "evaluation": {
            "data": {"source": str(data_dir), "split": "validation"},
            "generation": {"max_new_tokens": 4, "batch_size": 4},
            "n_resamples": 50,
        },
        "baseline": {"name": "zero-shot", "model": "random:tiny-llama"},
        "variants": [{"name": "lora", "config": lora}],
        "report": {"examples": 1, "random_examples": 1, "n_resamples": 50},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter: Counter = Counter()
    real_train, real_evaluate = training.train, evaluation_run.evaluate_to_dir

    def counting_train(config, **kwargs):
        counter["train"] += 1
        counter["train-resume"] += bool(kwargs.get("resume"))
        return real_train(config, **kwargs)

    def counting_evaluate(loaded, records, spec, output_dir, **kwargs):
        counter["eval:" + Path(output_dir).name] += 1
        return real_evaluate(loaded, records, spec, output_dir, **kwargs)

    monkeypatch.setattr(training, "train", counting_train)
    monkeypatch.setattr(evaluation_run, "evaluate_to_dir", counting_evaluate)
    return counter


def _mtimes(root: Path) -> dict[str, int]:
    watched = [
        "eval/zero-shot/predictions/validation.jsonl",
        "eval/lora/predictions/validation.jsonl",
        "train/lora/adapter/adapter_model.safetensors",
        "train/lora/metadata.json",
    ]
    return {name: (root / name).stat().st_mtime_ns for name in watched}


def _run(path: Path, *overrides: str):
    # In-process training, so the counters see each call (the CLI test covers the subprocess path).
    experiment = load_experiment(path, list(overrides))
    return run_experiment(experiment, progress=False, log=lambda _: None, isolate_training=False)


def test_stages_are_reused_and_only_affected_ones_rerun(experiment_file: Path, calls: Counter) -> None:
    first = _run(experiment_file)
    root = first.output_dir
    assert [(s.kind, s.name, s.reused) for s in first.stages] == [
        ("eval", "zero-shot", False),
        ("train", "lora", False),
        ("eval", "lora", False),
    ]
    assert calls == Counter({"train": 1, "eval:zero-shot": 1, "eval:lora": 1})
    for name in ("report.md", "report.html", "report.json", "rouge.png", "quality_vs_params.png"):
        assert (root / "report" / name).is_file()
    assert (
        json.loads((root / "eval" / "lora" / "stage.json").read_text())["key"]
        == first.stage("eval", "lora").key
    )
    # A stage evaluates through `dialogtune evaluate`'s inference path: the adapter merged into
    # the base weights (as the verb does), the precision recorded, so both give the same numbers.
    lora_model = json.loads((root / "eval" / "lora" / "metrics" / "validation.json").read_text())["model"]
    assert lora_model["adapter_merged"] is True and lora_model["precision"] in ("fp32", "bf16")
    manifest = json.loads((root / "experiment.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["zero-shot", "lora"]
    report = (root / "report" / "report.md").read_text()
    assert "lora vs zero-shot" in report and "RANDOM WEIGHTS" in report
    before = _mtimes(root)

    # Rerun as is: nothing is trained or generated again, no output file is rewritten.
    second = _run(experiment_file)
    assert all(s.reused for s in second.stages)
    assert [s.key for s in second.stages] == [s.key for s in first.stages]
    assert calls == Counter({"train": 1, "eval:zero-shot": 1, "eval:lora": 1})
    assert _mtimes(root) == before

    # New generation settings: every model is evaluated again, nothing is retrained.
    third = _run(experiment_file, "evaluation.generation.max_new_tokens=5")
    assert [(s.kind, s.reused) for s in third.stages] == [("eval", False), ("train", True), ("eval", False)]
    assert calls == Counter({"train": 1, "eval:zero-shot": 2, "eval:lora": 2})

    # A new LoRA rank: that variant alone is retrained and re-evaluated; the baseline is reused.
    fourth = _run(experiment_file, "evaluation.generation.max_new_tokens=5", "variants.lora.set.lora.r=2")
    assert [(s.kind, s.reused) for s in fourth.stages] == [("eval", True), ("train", False), ("eval", False)]
    assert calls == Counter({"train": 2, "eval:zero-shot": 2, "eval:lora": 3})
    adapter_config = json.loads((root / "train" / "lora" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2

    # An interrupted evaluation (no stage.json yet) is run again; finished stages are not.
    (root / "eval" / "zero-shot" / "stage.json").unlink()
    fifth = _run(experiment_file, "evaluation.generation.max_new_tokens=5", "variants.lora.set.lora.r=2")
    assert [(s.kind, s.reused) for s in fifth.stages] == [("eval", False), ("train", True), ("eval", True)]
    assert calls == Counter({"train": 2, "eval:zero-shot": 3, "eval:lora": 3})

    # An interrupted training (config written, never finished) resumes in place, same config.
    (root / "train" / "lora" / "metadata.json").unlink()
    (root / "train" / "lora" / "stage.json").unlink()
    sixth = _run(experiment_file, "evaluation.generation.max_new_tokens=5", "variants.lora.set.lora.r=2")
    assert [(s.kind, s.reused) for s in sixth.stages] == [("eval", True), ("train", False), ("eval", False)]
    assert calls == Counter({"train": 3, "train-resume": 1, "eval:zero-shot": 3, "eval:lora": 4})


def test_a_copied_experiment_folder_is_adopted_not_retrained(experiment_file: Path, calls: Counter) -> None:
    import shutil

    first = _run(experiment_file)
    copy = first.output_dir.parent / "exp-copy"
    shutil.copytree(first.output_dir, copy)  # copy2: the weights keep their times and contents
    # As after an upgrade that added a config key: the training stage's key no longer matches, so
    # the runner must recognise the finished run by its saved config, whose output_dir is the old one.
    (copy / "train" / "lora" / "stage.json").unlink()
    second = _run(experiment_file, f"output_dir={copy}")
    assert [(s.kind, s.name, s.reused) for s in second.stages] == [
        ("eval", "zero-shot", True),
        ("train", "lora", True),
        ("eval", "lora", True),
    ]
    assert calls == Counter({"train": 1, "eval:zero-shot": 1, "eval:lora": 1})
    assert (
        json.loads((copy / "train" / "lora" / "stage.json").read_text())["key"]
        == first.stage("train", "lora").key
    )


def test_run_cli_reports_stages(
    experiment_file: Path, calls: Counter, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(experiment_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "name: tiny" in out and "lora: lora on random:tiny-llama, training config valid" in out
    assert not calls  # a dry run runs nothing
    assert main(["run", str(experiment_file)]) == 0  # trains in a subprocess: invisible to the counters
    out = capsys.readouterr().out
    assert (
        re.search(r"train lora +ran in", out) and re.search(r"eval +lora +ran in", out) and "report:" in out
    )
    metadata = json.loads((experiment_file.parent / "exp" / "train" / "lora" / "metadata.json").read_text())
    assert metadata["train"]["global_step"] == 2 and metadata["parameters"]["trainable"] > 0
    assert main(["run", str(experiment_file)]) == 0
    assert re.search(r"train lora +reused", capsys.readouterr().out)
    assert calls == Counter({"eval:zero-shot": 1, "eval:lora": 1})
    assert (
        main(["report", str(experiment_file.parent / "exp"), "--output", str(experiment_file.parent / "r")])
        == 0
    )
    assert "lora vs zero-shot" in (experiment_file.parent / "r" / "report.md").read_text()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it (it was re-parented when its parent died)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_killing_the_runner_stops_its_training_process(tmp_path: Path, data_dir: Path) -> None:
    """`kill -9` of the parent must not leave a training running on (it would hold the CPU
    and the run directory); the training child gets SIGTERM from the kernel."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = f"""
import torch
torch.set_num_threads(1)
from dialogtune.training import load_config
from dialogtune.experiments.runner import _train_in_subprocess
config = load_config(None, ["model=random:tiny-llama", "method=lora", "output_dir={tmp_path / "run"}",
                            "data.source={data_dir}", "data.eval=null", "training.max_steps=1000000",
                            "training.precision=fp32", "training.logging_steps=1000", "training.save_steps=1000000",
                            "eval.strategy=no"])
_train_in_subprocess(config, resume=False, overwrite=False, progress=False)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline, trainer = time.time() + 120, None
        while trainer is None and time.time() < deadline and parent.poll() is None:
            trainer = next((c for c in _children(parent.pid) if "resource_tracker" not in _cmdline(c)), None)
            time.sleep(0.2)
        assert trainer is not None, "the training process never started"
        # Let it get into training (the config is written once the Trainer is set up).
        while not (tmp_path / "run" / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "run" / "config.yaml").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone_by = time.time() + 30
        while _alive(trainer) and time.time() < gone_by:
            time.sleep(0.2)
        assert not _alive(trainer)
    finally:
        if parent.poll() is None:
            parent.kill()
