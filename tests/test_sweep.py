"""Sweeps that run: tiny LoRA trials on a tiny random Llama, a few seconds each.

A study finds the one parameter that matters (and its importance), pruning stops a bad trial
early, a diverging trial fails without ending the sweep, a sweep killed with SIGKILL resumes the
same study, interrupted (Ctrl-C) and silent (no heartbeat) trials are queued again, a trial in its own process reports the ROUGE probe's CI, best.yaml trains, and two
processes share one SQLite study (opt-in: -m slow).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from test_training import write_dialogues

from dialogtune.errors import ConfigError
from dialogtune.sweep import check_sweep, load_sweep, run_sweep, runner
from dialogtune.sweep import study as sweep_study
from dialogtune.training import load_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_sweep(folder: Path, *, base: dict[str, Any] | None = None, **sweep: Any) -> Path:
    """A sweep over LoRA on tiny-llama (8 fixed dialogues, 8 steps of 8): base.yaml + sweep.yaml."""
    data = write_dialogues(folder / "data")
    config = {
        "model": "random:tiny-llama",
        "method": "lora",
        "data": {
            "source": str(data),
            "eval": {"split": "validation", "limit": 4},
            "max_dialogue_tokens": 96,
            "max_target_tokens": 32,
        },
        "training": {"batch_size": 8, "logging_steps": 1, "precision": "fp32", "learning_rate": 3e-2},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "eval": {"strategy": "steps", "steps": 2, "metric": "loss", "load_best": False},
        **(base or {}),
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(config))
    spec = {
        "name": "tiny",
        "base": "base.yaml",
        "output_dir": str(folder / "out"),
        "objective": {"metric": "loss"},
        "budget": {"steps": 8},
        "pruner": {"kind": "none"},
        "sampler": {"kind": "tpe", "seed": 0},
        "isolate": False,
        **sweep,
    }
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "sweep.yaml"


def trials_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "trials.json").read_text())


def test_sweep_finds_the_parameter_that_matters(tmp_path: Path) -> None:
    # The learning rate decides the loss; logging_steps cannot change it (same weights, same loss).
    path = tiny_sweep(
        tmp_path,
        space={
            "training.learning_rate": {"choice": [1e-6, 3e-2]},
            "training.logging_steps": {"choice": [1, 2]},
        },
        start_with=[
            {"training.learning_rate": 1e-6, "training.logging_steps": 1},
            {"training.learning_rate": 3e-2, "training.logging_steps": 1},
        ],
        trials=4,
    )
    lines: list[str] = []
    result = run_sweep(load_sweep(path), progress=False, log=lines.append)
    out = result.sweep_dir
    table = trials_json(out)
    rows = table["trials"]
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert table["best"]["params"]["training.learning_rate"] == 3e-2
    low = [r["value"] for r in rows if r["params"]["training.learning_rate"] == 1e-6]
    high = [r["value"] for r in rows if r["params"]["training.learning_rate"] == 3e-2]
    assert low and high and max(high) < min(low) - 1.0  # 8 steps at 3e-2 learn, at 1e-6 nothing
    importance = table["importance"]
    assert importance["training.learning_rate"] > 0.9 > importance["training.logging_steps"]
    for row in rows:  # ordinary, finished run directories with the figures the table shows
        meta = json.loads((out / row["run_dir"] / "metadata.json").read_text())
        assert row["steps"] == meta["train"]["global_step"] == 8
        assert row["n"] == 4 and row["wall_time_s"] > 0 and row["peak_memory_mb"] > 0
        assert row["value"] == pytest.approx(meta["last_eval"]["eval_loss"])
    with (out / "trials.csv").open() as handle:
        table_csv = list(csv.DictReader(handle))
    assert [r["training.learning_rate"] for r in table_csv] == [
        str(r["params"]["training.learning_rate"]) for r in rows
    ]
    finished = [line for line in lines if " complete " in line]
    assert len(finished) == 4 and all("loss " in line and "8 steps" in line for line in finished)
    # The report: Markdown with its PNGs beside it, HTML self-contained.
    html = (out / "report" / "report.html").read_text()
    for image in ("metric_by_trial", "importance", "intermediate", "slice", "parallel"):
        assert (out / "report" / f"{image}.png").stat().st_size > 1000
    assert html.count("data:image/png;base64,") == 5
    assert "learning_rate" in (out / "report" / "report.md").read_text()
    # best.yaml is a training config: it loads and trains as it is.
    best = load_config(out / "best.yaml", [f"output_dir={tmp_path / 'best'}", "training.max_steps=2"])
    assert best.training.learning_rate == 3e-2 and best.eval.steps == 2
    trained = train(best, progress=False)
    assert (trained.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    # A rerun finds the target reached: nothing trains, the outputs are rewritten.
    again = run_sweep(load_sweep(path), progress=False, report=False, log=lines.append)
    assert "holds 4 finished trials" in again.stopped and len(again.rows) == 4
    # A sweep file changed in a way that makes trials incomparable is refused, not mixed in.
    with pytest.raises(ConfigError, match=r"was started with another sweep \(changed: fixed\)"):
        run_sweep(load_sweep(path, ["set.data.max_target_tokens=16"]), progress=False, log=lines.append)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # the heartbeat
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # study.ask() for the remote trial
def test_interrupted_and_silent_trials_are_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_sweep(
        tmp_path, space={"lora.r": {"choice": [2, 4, 8]}}, trials=2, heartbeat_seconds=1, grace_seconds=2
    )
    config, out = load_sweep(path), tmp_path / "out"
    # Trial 0 runs on another machine (sharing the folder), which then vanishes: its heartbeat stops.
    runner._claim_sweep_dir(config)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{out / 'study.db'}", heartbeat_interval=1, grace_period=2
    )
    study = sweep_study.open_study(config, str(storage.url), out, check_sweep(config).to_dict())
    remote = study.ask()
    remote_params = {p.key: p.suggest(remote) for p in config.params}
    remote.set_user_attr("worker", {"host": "elsewhere", "boot": "", "pid": 1})
    storage.record_heartbeat(remote._trial_id)
    (out / "trials" / "trial-0000").mkdir(parents=True)
    silent_since = time.monotonic()

    # Trial 1 is interrupted here (Ctrl-C).
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, progress=False, log=lambda _: None)
    monkeypatch.undo()
    rows = trials_json(out)["trials"]  # written despite the interruption
    assert [r["state"] for r in rows] == ["running", "failed", "waiting"]
    assert rows[2]["params"] == rows[1]["params"] and rows[2]["retry_of"] == 1

    time.sleep(max(0.0, 2.5 - (time.monotonic() - silent_since)))  # past the grace period
    result = run_sweep(load_sweep(path), progress=False, report=False, log=lambda _: None)
    states = [r["state"] for r in result.rows]
    assert states == ["failed", "failed", "complete", "complete"]
    assert (result.rows[2]["retry_of"], result.rows[2]["params"]) == (1, rows[1]["params"])
    assert (result.rows[3]["retry_of"], result.rows[3]["params"]) == (0, remote_params)
    # The silent trial's folder may still be written by a slow worker: it is left alone.
    assert (out / "trials" / "trial-0000").is_dir()


def test_pruning_stops_a_bad_trial_early_and_a_failed_trial_does_not_end_the_sweep(tmp_path: Path) -> None:
    path = tiny_sweep(
        tmp_path,
        space={"training.learning_rate": {"choice": [3e-2, 1e9, 1e-6]}},
        start_with=[{"training.learning_rate": lr} for lr in (3e-2, 1e9, 1e-6)],
        pruner={"kind": "median", "startup_trials": 1, "warmup_evaluations": 1},
        trials=2,
    )
    lines: list[str] = []
    result = run_sweep(load_sweep(path), progress=False, report=False, log=lines.append)
    good, diverged, slow = trials_json(result.sweep_dir)["trials"]
    assert (good["state"], good["steps"]) == ("complete", 8)
    # lr 1e9: the loss or gradient turns NaN; the trial fails with the trainer's message, the sweep goes on.
    assert diverged["state"] == "failed" and "training stopped at step" in diverged["error"]
    # lr 1e-6: at its first evaluation (step 2) its loss is far above the good trial's: pruned.
    assert (slow["state"], slow["steps"], slow["stopped_by"]) == ("pruned", 2, "pruned")
    run = result.sweep_dir / slow["run_dir"]
    meta = json.loads((run / "metadata.json").read_text())  # a finished run, only shorter
    assert meta["train"]["global_step"] == 2 and (run / "adapter").is_dir()
    assert slow["value"] == pytest.approx(meta["last_eval"]["eval_loss"])
    assert any(" pruned " in line for line in lines) and any(" failed " in line for line in lines)


def test_trial_in_its_own_process_reports_the_probe_ci(tmp_path: Path) -> None:
    path = tiny_sweep(
        tmp_path,
        base={"eval": {"strategy": "steps", "steps": 4, "rouge_dialogues": 2, "load_best": False}},
        space={"lora.r": {"choice": [2, 4]}},
        objective={"metric": "rouge1"},
        trials=1,
        isolate=True,
    )
    result = run_sweep(load_sweep(path), progress=False, report=False, log=lambda _: None)
    (row,) = result.rows
    assert row["state"] == "complete" and row["n"] == 2 and row["steps"] == 8
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    meta = json.loads((result.sweep_dir / row["run_dir"] / "metadata.json").read_text())
    assert meta["last_probe"]["rouge1"]["mean"] == pytest.approx(row["value"], abs=1e-6)
    assert row["peak_memory_mb"] == meta["peak_memory_mb"] > 0
    # The quiet trial's training output went to its log, not to the sweep's output.
    assert "eval_rouge1" in (result.sweep_dir / "logs" / "trial-0000.log").read_text()


def _sweep_process(path: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dialogtune", "sweep", str(path), "--no-progress", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_killed_sweep_resumes_the_same_study(tmp_path: Path) -> None:
    # 30 steps per trial: long enough to be killed in the middle of trial 1.
    path = tiny_sweep(
        tmp_path,
        space={"training.learning_rate": {"log_uniform": [1e-3, 3e-2]}},
        budget={"steps": 30},
        trials=2,
    )
    out = tmp_path / "out"
    process = _sweep_process(path)
    try:
        _wait_for(lambda: (out / "trials" / "trial-0001" / "config.yaml").is_file(), 120, "trial 1 to start")
    finally:
        process.send_signal(signal.SIGKILL)
        output = process.communicate()[0]
    assert "trial   0  complete" in output and "trial   1  started" in output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    before = study.trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]  # trial 1 died mid-way
    assert not (out / "trials" / "trial-0001" / "metadata.json").exists()

    lines: list[str] = []
    result = run_sweep(load_sweep(path), progress=False, report=False, log=lines.append)
    rows = {r["number"]: r for r in result.rows}
    # Trial 0 is kept; the dead trial 1 is failed and its values trained again as trial 2.
    assert rows[0]["value"] == pytest.approx(before[0].value)
    assert rows[1]["state"] == "failed" and rows[2]["retry_of"] == 1
    assert rows[2]["params"] == rows[1]["params"] and rows[2]["state"] == "complete"
    assert [r["state"] for r in result.rows] == ["complete", "failed", "complete"]
    assert "holds 2 finished trials (target 2)" in result.stopped
    assert any("its process" in line and "died" in line for line in lines)
    # No half-written run folder is left, and no folder served two trials.
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == ["trial-0000", "trial-0002"]
    for name in folders:
        assert (out / "trials" / name / "metadata.json").is_file()
        assert yaml.safe_load((out / "trials" / name / "config.yaml").read_text())["output_dir"].endswith(
            name
        )


@pytest.mark.slow  # two fresh Python processes importing torch: ~30 s on the 2-core box
def test_two_processes_share_one_sqlite_study(tmp_path: Path) -> None:
    path = tiny_sweep(
        tmp_path,
        space={"training.learning_rate": {"log_uniform": [1e-3, 3e-2]}},
        budget={"steps": 16},
        trials=4,
    )
    workers = [_sweep_process(path) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    rows = trials_json(tmp_path / "out")["trials"]
    numbers = [r["number"] for r in rows]
    finished = [r for r in rows if r["state"] == "complete"]
    # Each worker checks the target before it starts a trial: together they may overshoot by one.
    assert 4 <= len(finished) <= 5 and numbers == sorted(set(numbers))
    started = [line for text in outputs for line in text.splitlines() if " started " in line]
    assert len(started) == len(rows)  # every trial was trained by exactly one of the two
    assert all((tmp_path / "out" / r["run_dir"] / "metadata.json").is_file() for r in finished)
