"""DoRA through PEFT (``LoraConfig(use_dora=True)``): LoRA on the direction of each weight, plus a
trained magnitude per output (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation").

Same settings as LoRA (its own ``dora:`` section) and a few more parameters (the magnitudes).
Each step recomputes the norm of W + B·A, so it trains slower than LoRA; merged, it costs nothing
at inference. It reads the base weights outside the matmul (for the norm), so their bf16 copy is
not exact: ``training.frozen_weights: auto`` keeps them in fp32. The server does not apply DoRA
per request (its magnitudes rescale the base layer's output): merge it or serve it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dialogtune.methods.lora import LoraMethod, LoraSettings


@dataclass
class DoraSettings(LoraSettings):
    """DoRA hyper-parameters: LoRA's, in the ``dora:`` section."""

    SECTION: ClassVar[str] = "dora"


METHOD = LoraMethod(
    name="dora",
    summary="DoRA: LoRA on each weight's direction plus a trained magnitude (LoraConfig(use_dora=True))",
    settings_cls=DoraSettings,
    peft_type="LORA",
    use_dora=True,
    exact_bf16_base=False,
    servable_unmerged=False,
)
