"""``--resume`` after ``kill -9``: the resumed run ends with the same weights and losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import write_dialogues

from dialogtune.errors import ConfigError
from dialogtune.ownership import mark
from dialogtune.training import load_config, train

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny-llama-lora.yaml"  # 16 examples, batch 4, 8 steps = 2 epochs, save every 2

# Trains in a child process that SIGKILLs itself right after step 6, before checkpoint-6 is
# written: the newest complete checkpoint is then checkpoint-4 (in the second epoch's run-up).
KILLER = """
import os, signal, sys
import torch
from transformers import TrainerCallback
from dialogtune.training import load_config, train

torch.set_num_threads(1)

class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 6:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config(sys.argv[1], sys.argv[2:]), progress=False, callbacks=[KillAt()])
"""


def child_env() -> dict[str, str]:
    # One thread, as in this process: the same arithmetic, bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def overrides(tmp_path: Path, run: str) -> list[str]:
    return [f"data.source={write_dialogues(tmp_path / 'data', n_train=16)}", f"output_dir={tmp_path / run}"]


def losses(run_dir: Path) -> dict[int, float]:
    history = json.loads((run_dir / "logs" / "history.json").read_text())
    return {row["step"]: row["loss"] for row in history if "loss" in row}


def test_resume_after_kill_9_equals_uninterrupted_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    reference = train(load_config(CONFIG, overrides(tmp_path, "reference")), progress=False).run_dir

    sets = overrides(tmp_path, "killed")
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(CONFIG), *sets],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "killed"
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (run / "adapter").exists() and not (run / "metadata.json").exists()
    # A checkpoint cut short while being written (no trainer_state.json yet) must be skipped.
    (checkpoints / "checkpoint-6").mkdir()
    (checkpoints / "checkpoint-6" / "adapter_model.safetensors").write_bytes(b"\x00" * 10)

    sets_args = [arg for s in sets for arg in ("--set", s)]
    resumed = subprocess.run(
        [sys.executable, "-m", "dialogtune", "train", str(CONFIG), *sets_args, "--resume", "--no-progress"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-4" in resumed.stdout

    expected = load_file(reference / "adapter" / "adapter_model.safetensors")
    actual = load_file(run / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert losses(run) == losses(reference) and sorted(losses(run)) == list(range(1, 9))
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["resumed_from"] == "checkpoint-4" and meta["train"]["global_step"] == 8
    assert not checkpoints.exists()


def test_an_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sets = [*overrides(tmp_path, "run"), "training.max_steps=2"]
    train(load_config(CONFIG, sets), progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(load_config(CONFIG, sets), progress=False)
    with pytest.raises(ConfigError, match="already finished"):
        train(load_config(CONFIG, sets), resume=True, progress=False)
    train(load_config(CONFIG, sets), overwrite=True, progress=False)  # replaces it


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = load_config(CONFIG, overrides(tmp_path, "run"))
    run.mkdir()
    mark(run, "train")  # an interrupted training run, made with another config
    (run / "config.yaml").write_text("method: full\n")
    with pytest.raises(ConfigError, match="different config"):
        train(config, resume=True, progress=False)
