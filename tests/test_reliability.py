"""Nothing a user owns is deleted, and every rerun after a crash recovers.

``kill -9`` is real here: the child process runs the CLI with ``tests/crash/sitecustomize.py``
on its path, which SIGKILLs it at a chosen call (see that file). The rerun must finish from what
was left and give exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_training import tiny_overrides, write_dialogues

from dialogtune.cli import main
from dialogtune.training import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CRASH_HOOK = Path(__file__).parent / "crash"
TINY = "random:tiny-llama"


def _data(folder: Path, n: int = 5, text: str = "I will bring") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": f"d{i}",
            "dialogue": f"#Person1#: Are you coming, friend {i}?\n#Person2#: Yes, {text} café {i}.",
            "summary": f"#Person2# comes with café {i}.",
        }
        for i in range(n)
    ]
    path = folder / "validation.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _evaluate_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate", "--model", TINY, "--data", str(data), "--max-new-tokens", "6", "--batch-size", "2",
        "--n-resamples", "20", "--output-dir", str(out), *extra,
    ]  # fmt: skip


def _killed(args: list[str], kill_at: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(CRASH_HOOK), os.environ.get("PYTHONPATH", "")]),
        "DIALOGTUNE_KILL_AT": kill_at,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "dialogtune", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outputs(run: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(x) for x in (run / "predictions" / "validation.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "metrics" / "validation.json").read_text())
    return rows, {k: metrics[k] for k in ("rouge1", "rouge2", "rougeL", "n")}


# ---- kill -9 at chosen moments, then rerun -----------------------------------------------------

KILL_POINTS = {
    "mid-line of the second batch": "dialogtune.predict:_open_partial:2:torn",
    "during scoring (partial complete)": "dialogtune.evaluation.metrics:compute_metrics:1",
    "before the final predictions write": "dialogtune.evaluation.predictions:write_predictions:1",
    "after predictions and metrics, before metadata": "dialogtune.runinfo:run_metadata:1",
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, tuple[list[dict], dict]]:
    root = tmp_path_factory.mktemp("reference")
    data = _data(root / "data")
    assert main(_evaluate_args(data, root / "run")) == 0
    return data, _outputs(root / "run")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_evaluate_recovers_after_kill_9(point: str, reference, tmp_path: Path, capsys) -> None:
    data, expected = reference
    out = tmp_path / "run"
    child = _killed(_evaluate_args(data, out), KILL_POINTS[point], tmp_path)
    assert child.returncode == -9, child.stderr[-2000:]
    assert not (out / "metadata.json").exists()  # it really died before finishing
    partial = out / "predictions" / "validation.jsonl.partial"
    if "mid-line" in point:
        assert not partial.read_bytes().endswith(b"\n")  # a torn last line (cut inside "café")
    assert main(_evaluate_args(data, out)) == 0, capsys.readouterr().err
    assert _outputs(out) == expected
    assert not partial.exists()


def test_generate_finishes_from_a_complete_partial_without_generating(tmp_path: Path, monkeypatch, capsys):
    """Disk full at the very end: the partial holds every row; the rerun only writes the file."""
    import dialogtune.cli.generate_cmd  # noqa: F401 - the verb module whose imports we patch
    import dialogtune.evaluation.predictions as predictions
    import dialogtune.predict as predict

    data = _data(tmp_path / "data")
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--model", TINY, "--data", str(data), "--max-new-tokens", "6", "--output", str(out)]
    real_write = predictions.write_predictions

    def disk_full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predictions, "write_predictions", disk_full)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and "Traceback" not in err
    partial = tmp_path / "preds.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 1 + 5 and not out.exists()

    monkeypatch.setattr(predictions, "write_predictions", real_write)
    asked: list[int] = []
    real_generate = predict.generate
    monkeypatch.setattr(
        predict, "generate", lambda m, d, *a, **k: asked.append(len(d)) or real_generate(m, d, *a, **k)
    )
    assert main(args) == 0
    assert asked == [0] and "5 resumed" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 5 and not partial.exists()


def test_resume_key_covers_the_data_and_the_weights(tmp_path: Path, capsys) -> None:
    """Old partial rows are reused only for the same dialogues and the same weight files."""
    data = _data(tmp_path / "a")
    model_dir = tmp_path / "model"
    from dialogtune.models.loading import load_model

    loaded = load_model(TINY)
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--model", str(model_dir), "--max-new-tokens", "6", "--output", str(out)]
    assert main([*args, "--data", str(data)]) == 0
    capsys.readouterr()
    partial = tmp_path / "preds.jsonl.partial"
    from dialogtune.data import load_records
    from dialogtune.data.config import DataConfig
    from dialogtune.generation import GenerationSettings
    from dialogtune.predict import run_key
    from dialogtune.prompts import PromptTemplate

    records = load_records(DataConfig(source=str(data)))
    from dialogtune.models.inference import load_for_inference

    # The key of the run as `generate` loads it (the inference path: its precision and residual
    # stream are part of what determines the outputs).
    key = run_key(
        load_for_inference(str(model_dir)), GenerationSettings(max_new_tokens=6), PromptTemplate(), records
    )

    def leave_partial() -> None:
        """As if the finished run had been killed with every row generated: the rows say STALE."""
        ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
        out.unlink()
        lines = [json.dumps({"key": key})] + [json.dumps({"id": i, "prediction": "STALE"}) for i in ids]
        partial.write_text("\n".join(lines) + "\n")

    leave_partial()
    assert main([*args, "--data", str(data)]) == 0  # same data, same weights: the stale rows are reused
    assert "5 resumed" in capsys.readouterr().out
    assert all(json.loads(x)["prediction"] == "STALE" for x in out.read_text().splitlines())

    other = _data(tmp_path / "b", text="we bring")  # same ids, other dialogues
    leave_partial()
    assert main([*args, "--data", str(other), "--overwrite"]) == 0
    assert "0 resumed" in capsys.readouterr().out

    leave_partial()
    weights = model_dir / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    assert main([*args, "--data", str(data), "--overwrite"]) == 0
    assert "0 resumed" in capsys.readouterr().out
    assert not any(json.loads(x)["prediction"] == "STALE" for x in out.read_text().splitlines())


# ---- never replace what the user owns ----------------------------------------------------------


def test_generate_refuses_outputs_that_are_inputs_folders_or_foreign_files(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path / "data")
    before = data.read_bytes()
    base = ["generate", "--model", TINY, "--data", str(data), "--max-new-tokens", "4", "--output"]
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"mine": 1}\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = {
        str(data): "is also an input",
        str(tmp_path): "is a folder",
        str(blocker / "preds.jsonl"): "is a file, not a folder",
        str(foreign): "was not written by dialogtune",
        "": "non-empty path",
    }
    for output, message in cases.items():
        assert main([*base, output]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (output, err)
    assert data.read_bytes() == before and foreign.read_text() == '{"mine": 1}\n'
    assert not list(tmp_path.rglob("*.partial"))  # refused before any generation
    ours = tmp_path / "ours.jsonl"
    assert main([*base, str(ours)]) == 0
    assert main([*base, str(ours)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*base, str(ours), "--overwrite"]) == 0


def test_train_overwrite_replaces_only_its_own_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    overrides = tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=1")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({}))
    train_args = ["train", str(config), *(a for o in overrides for a in ("--set", o))]
    for extra in ([], ["--overwrite"]):
        assert main([*train_args, "--set", f"output_dir={user}", *extra]) == 2
        assert "did not write" in capsys.readouterr().err
    assert (user / "chapter1.tex").read_text() == "precious"
    monkeypatch.chdir(user)
    assert main([*train_args, "--set", "output_dir=", "--overwrite"]) == 2  # "" would be the cwd
    assert "non-empty path" in capsys.readouterr().err
    assert main([*train_args, "--set", "output_dir=.", "--overwrite"]) == 2
    assert (user / "chapter1.tex").read_text() == "precious"
    # An evaluation run is not a training run either.
    evaluation = tmp_path / "eval"
    assert main(_evaluate_args(_data(tmp_path / "d"), evaluation)) == 0
    assert main([*train_args, "--set", f"output_dir={evaluation}", "--overwrite"]) == 2
    assert "dialogtune eval output" in capsys.readouterr().err
    # Its own earlier run: replaced with --overwrite.
    run = tmp_path / "run"
    assert main([*train_args, "--set", f"output_dir={run}"]) == 0
    assert main([*train_args, "--set", f"output_dir={run}"]) == 2
    assert main([*train_args, "--set", f"output_dir={run}", "--overwrite"]) == 0


def test_evaluate_never_mixes_two_models_in_one_folder(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path / "data")
    out = tmp_path / "run"
    assert main(_evaluate_args(data, out)) == 0
    config_before = (out / "config.yaml").read_text()
    other = ["evaluate", "--model", "random:tiny-t5", *_evaluate_args(data, out)[3:]]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "holds an evaluation of random:tiny-llama" in err and "--overwrite" in err
    assert (out / "config.yaml").read_text() == config_before  # untouched
    assert main([*other, "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "random:tiny-t5"
    # The same evaluation again: reused, not redone.
    mtime = (out / "metrics" / "validation.json").stat().st_mtime_ns
    assert main([*other, "--overwrite"]) == 0
    assert (out / "metrics" / "validation.json").stat().st_mtime_ns == mtime
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("x")
    assert main([*other[:-2], "--output-dir", str(mine), "--overwrite"]) == 2
    assert (mine / "a.txt").read_text() == "x"


# ---- non-finite numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", ".inf", "nan", "-.inf", "1e999"])
def test_non_finite_numbers_are_refused(value: str, tmp_path: Path) -> None:
    from dialogtune.errors import ConfigError

    with pytest.raises(ConfigError, match="finite"):
        load_config(None, [f"training.learning_rate={value}", f"output_dir={tmp_path}"])


def test_training_that_diverges_stops_with_one_line_and_keeps_the_checkpoint(tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file

    overrides = tiny_overrides(
        tmp_path, "tiny-llama", "full", "training.learning_rate=1e30", "training.save_steps=1",
        "training.max_steps=6", "training.keep_checkpoints=true",
    )  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    code = main(["train", str(config), "--no-progress", *(a for o in overrides for a in ("--set", o))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "training stopped at step" in err and "last good checkpoint" in err
    run = tmp_path / "run"
    assert not (run / "metadata.json").exists()  # not a finished run
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints
    import torch

    for tensor in load_file(checkpoints[-1] / "model.safetensors").values():
        assert torch.isfinite(tensor).all()


def test_a_non_finite_gradient_norm_stops_before_the_optimizer_step(tmp_path: Path) -> None:
    from dialogtune.training.trainer import DialogTrainer, TrainingDiverged

    trainer = DialogTrainer.__new__(DialogTrainer)
    trainer.args = type("A", (), {"fp16": False, "learning_rate": 1e-3})()
    trainer.state = type("S", (), {"global_step": 3})()
    from transformers import Trainer

    original = Trainer._get_grad_norm
    try:
        Trainer._get_grad_norm = lambda self, model, grad_norm=None: float("nan")
        with pytest.raises(TrainingDiverged, match="step 4: the gradient norm became nan"):
            trainer._get_grad_norm(None)
        trainer.args.fp16 = True  # fp16's scaler skips such steps itself
        assert trainer._get_grad_norm(None) != trainer._get_grad_norm(None)  # nan passes through
    finally:
        Trainer._get_grad_norm = original


def test_experiment_output_dir_must_not_be_a_users_folder(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report").mkdir()
    (mine / "report" / "report.md").write_text("my report")
    experiment = tmp_path / "e.yaml"
    data = write_dialogues(tmp_path / "data")
    experiment.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(mine),
                "evaluation": {"data": {"source": str(data), "split": "validation", "limit": 2}},
                "baseline": {"name": "zero", "model": TINY},
            }
        )
    )
    assert main(["run", str(experiment)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "report" / "report.md").read_text() == "my report"
