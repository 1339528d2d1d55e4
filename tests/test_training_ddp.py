"""The same ``dialogtune train`` under ``torchrun`` with 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import files_under, write_dialogues

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU process groups are tested on Linux")
def test_train_runs_unchanged_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    data = write_dialogues(tmp_path / "data", n_train=16)
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    command = [
        *torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "dialogtune",
        "train",
        str(REPO / "configs" / "tiny-llama-lora.yaml"),
        "--set",
        f"data.source={data}",
        "--set",
        f"output_dir={run}",
        "--set",
        "lora.dropout=0.0",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert done.stdout.count("run directory:") == 1  # only the main process reports

    meta = json.loads((run / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["train"]["global_step"] == 8
    # 2 processes x 4 examples per step: the 16 examples are one epoch every 2 steps.
    assert meta["train"]["epoch"] == pytest.approx(4.0)
    written = files_under(run)
    assert len([f for f in written if "tfevents" in f]) == 1  # one TensorBoard writer, on rank 0
    assert {
        "config.yaml",
        "metadata.json",
        "logs/history.json",
        "adapter/adapter_model.safetensors",
        "adapter/dialogtune_base.json",
    } <= written
    history = json.loads((run / "logs" / "history.json").read_text())
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses[-1] < losses[0], losses
