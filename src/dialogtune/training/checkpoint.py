"""Checkpoints, resume, and the atomic final save.

The Trainer writes ``checkpoints/checkpoint-<step>/`` with the weights (or the adapter),
optimizer, scheduler, RNG states and, last of all, ``trainer_state.json``. A checkpoint
cut short by ``kill -9`` lacks a readable ``trainer_state.json``; resume skips (and removes)
such folders and continues from the newest complete one. Restoring RNG states and skipping
the batches already seen makes a resumed run end with the same weights as an uninterrupted one.

The final ``adapter/`` or ``model/`` folder is built under a temporary name and renamed into
place, so a crash never leaves a half-written adapter that loads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from dialogtune.io import atomic_dir
from dialogtune.models.adapters import write_base_info
from dialogtune.models.contract import InferenceContract, write_contract
from dialogtune.models.loading import LoadedModel

CHECKPOINTS = "checkpoints"
_STEP = re.compile(r"checkpoint-(\d+)$")


def _is_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(folder.glob("*.safetensors"))


def latest_checkpoint(checkpoints_dir: Path, *, remove_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint under ``checkpoints_dir``; incomplete ones are removed."""
    if not checkpoints_dir.is_dir():
        return None
    found = [
        (int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := _STEP.search(p.name)) and p.is_dir()
    ]
    for _step, folder in sorted(found, reverse=True):
        if _is_complete(folder):
            return folder
        if remove_incomplete:  # cut short by a crash: useless, and it would confuse rotation
            shutil.rmtree(folder, ignore_errors=True)
    return None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Drop ``.adapter.*.tmp`` / ``.model.*.tmp`` folders left by a crash during a final save."""
    if run_dir.is_dir():
        for tmp in run_dir.glob(".*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def save_weights(
    loaded: LoadedModel,
    target: Path,
    *,
    adapter: bool,
    contract: InferenceContract,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``adapter/`` (PEFT adapter + tokenizer + base info) or ``model/`` (full model +
    tokenizer), each with the inference contract (how the model was prompted in training).

    ``state_dict``: the full weights gathered from all processes (FSDP, DeepSpeed ZeRO-3
    shard them; ``accelerator.get_state_dict`` collects them on the main process).
    """
    with atomic_dir(target) as tmp:
        loaded.model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))
        write_contract(tmp, contract)
        if adapter:
            write_base_info(tmp, loaded)
    return target
