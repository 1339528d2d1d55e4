"""Precision ``auto``: bf16 exactly where the hardware computes it natively (CPU flags mocked)."""

from __future__ import annotations

import pytest
import torch

from dialogtune.errors import ConfigError
from dialogtune.models import precision
from dialogtune.models.loading import load_model
from dialogtune.training.precision import resolve_precision as training_precision

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the precision rule sees."""

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return set_flags


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        (("avx512f", "avx512_bf16", "avx512_vnni"), "bf16"),  # AMD Zen 4 / Intel Cooper Lake
        (("avx512f", "amx_bf16", "amx_tile"), "bf16"),  # Intel Sapphire Rapids
        (("avx512f", "avx512_vnni"), "fp32"),  # bf16 would be emulated: slower than fp32
        (("avx2", "fma"), "fp32"),
        ((), "fp32"),  # no /proc/cpuinfo (macOS, ...)
    ],
)
def test_auto_follows_the_cpu_flags(flags, cpu, expected) -> None:
    flags(*cpu)
    assert precision.resolve_precision("auto", device="cpu", model_type="llama") == expected
    assert precision.resolve_precision("auto", device="cpu", model_type="t5") == expected
    # training and inference share the rule
    assert training_precision("auto", "llama", use_cuda=False) == expected
    loaded = load_model("random:tiny-llama")  # the loader's default is "auto" too
    assert loaded.precision == expected and loaded.describe()["precision"] == expected
    assert loaded.model.dtype == precision.DTYPES[expected]


def test_explicit_settings_and_refusals(flags) -> None:
    flags()
    assert precision.resolve_precision("bf16", device="cpu", model_type="llama") == "bf16"
    assert precision.resolve_precision("float32", device="cpu", model_type="llama") == "fp32"
    with pytest.raises(ConfigError, match="overflows in T5"):
        precision.resolve_precision("fp16", device="cuda", model_type="t5")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        precision.resolve_precision("fp16", device="cpu", model_type="llama")
    with pytest.raises(ConfigError, match="must be one of"):
        precision.resolve_precision("int8", device="cpu", model_type="llama")


def test_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    precision.cpu_flags.cache_clear()
    found = precision.cpu_flags()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            line = next(line for line in handle if line.startswith("flags"))
    except (OSError, StopIteration):
        assert found == frozenset()
        return
    assert found == frozenset(line.split(":", 1)[1].split())
    assert torch.device("cpu").type == "cpu"
