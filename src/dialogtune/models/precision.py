"""Which number format a model computes in: one rule for training, generation and serving.

``auto`` is bf16 where the hardware computes bf16 natively — a CUDA GPU with bf16 (Ampere and
later), or a CPU with the ``avx512_bf16`` or ``amx_bf16`` instructions — and fp32 elsewhere.
On CPUs without them bf16 is emulated and slower than fp32. fp16 is never chosen automatically
and is refused for T5-family models, whose feed-forward activations exceed fp16's range
(~65k) and turn into inf/NaN; bf16 has fp32's range, so it is safe for them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dialogtune.errors import ConfigError
from dialogtune.generation.settings import PRECISIONS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# The model types whose activations overflow fp16 (T5 v1.0/v1.1, mT5, umT5, FLAN-T5).
FP16_UNSAFE = ("t5", "mt5", "umt5")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 in hardware (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def normalise(setting: str) -> str:
    setting = ALIASES.get(setting, setting)
    if setting not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{setting}'")
    return setting


def resolve_precision(setting: str, *, device: torch.device | str, model_type: str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``setting`` on ``device`` (see the module docstring)."""
    setting = normalise(setting)
    device = torch.device(device)
    family = "t5" if "t5" in model_type.lower() else model_type.lower()
    if setting == "fp16" and family in FP16_UNSAFE:
        raise ConfigError("fp16 overflows in T5 models; use bf16 or fp32")
    if setting == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA GPU; use bf16 or fp32")
    if setting == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise ConfigError("bf16: this GPU has no bf16 (pre-Ampere); use fp32 or fp16")
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device) else "fp32"
