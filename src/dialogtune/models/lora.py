"""LoRA's settings and application, where earlier code imports them from.

LoRA is a method now (:mod:`dialogtune.methods.lora`, beside DoRA, IA3 and prompt tuning);
these names stay so that such imports keep working.
"""

from __future__ import annotations

from typing import Any

from dialogtune.methods.lora import DEFAULT_TARGETS, METHOD, LoraSettings

__all__ = ["DEFAULT_TARGETS", "LoraSettings", "apply_lora", "lora_config"]


def lora_config(settings: LoraSettings, model: Any) -> Any:
    """PEFT's ``LoraConfig`` for ``settings`` on ``model``."""
    from dialogtune.models.kinds import kind_for_config

    return METHOD.peft_config(settings, kind_for_config(model.config), model.config.model_type, None)


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap ``model`` with fresh LoRA layers; only they are trainable."""
    from dialogtune.models.kinds import kind_for_config

    return METHOD.apply(model, settings, kind_for_config(model.config))
