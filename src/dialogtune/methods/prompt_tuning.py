"""Prompt tuning through PEFT: trained embeddings of a few virtual tokens put before every input
(Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"). The model's
weights are not touched, so there is nothing to merge: inference runs through PEFT's model, which
prepends the tokens (the continuous-batching engine does not, so generation uses transformers'
``generate``). Causal models get them before the prompt, seq2seq models before the encoder input.

Initialisation matters (the paper's Figure 3): ``text`` starts the virtual tokens from the
embeddings of ``init_text`` (PEFT's ``PromptTuningInit.TEXT``), ``sample_vocab`` from random
vocabulary tokens, ``random`` from N(0, 1), far from any real embedding. It needs a higher
learning rate than LoRA (the paper: 0.3 with Adafactor; ~3e-2 with AdamW on few steps).
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dialogtune.errors import ConfigError, ModelSpecError
from dialogtune.methods.base import AdapterMethod

INITS = {"text": "TEXT", "sample_vocab": "SAMPLE_VOCAB", "random": "RANDOM"}


@dataclass
class PromptTuningSettings:
    """How many virtual tokens, and where their embeddings start."""

    SECTION: ClassVar[str] = "prompt_tuning"

    num_virtual_tokens: int = field(
        default=20, metadata={"help": "trained virtual tokens before every input"}
    )
    init: str = field(
        default="text", metadata={"help": "text (embeddings of init_text), sample_vocab or random"}
    )
    init_text: str = field(
        default="Summarize the following conversation.",
        metadata={"help": "init: text starts from these tokens' embeddings (repeated to fill)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_virtual_tokens, bool) or self.num_virtual_tokens < 1:
            raise ConfigError(
                f"prompt_tuning.num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens}"
            )
        if self.init not in INITS:
            raise ConfigError(f"prompt_tuning.init must be one of {', '.join(INITS)}, got '{self.init}'")
        if self.init == "text" and not self.init_text.strip():
            raise ConfigError("prompt_tuning.init_text must not be empty when prompt_tuning.init is text")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PromptTuningMethod(AdapterMethod):
    def peft_config(self, settings: PromptTuningSettings, kind: Any, model_type: str, tokenizer: Any) -> Any:
        from peft import PromptTuningConfig

        text = settings.init == "text"
        return PromptTuningConfig(
            task_type=kind.peft_task_type,
            num_virtual_tokens=settings.num_virtual_tokens,
            prompt_tuning_init=INITS[settings.init],
            prompt_tuning_init_text=settings.init_text if text else None,
            tokenizer_name_or_path=tokenizer if text else None,  # a folder (see apply)
        )

    def apply(self, model: Any, settings: Any = None, kind: Any = None, *, tokenizer: Any = None) -> Any:
        settings = settings if settings is not None else PromptTuningSettings()
        if settings.init != "text":
            return self.prepare_model(super().apply(model, settings, kind))
        if tokenizer is None:
            raise ConfigError("prompt_tuning.init=text needs the model's tokenizer")
        # PEFT's text initialisation loads the tokenizer by name; ours may exist only in memory
        # (random: models, the embedded GGUF), so PEFT reads a copy saved for the moment.
        with tempfile.TemporaryDirectory(prefix="dialogtune-tokenizer-") as folder:
            tokenizer.save_pretrained(folder)
            wrapped = super().apply(model, settings, kind, tokenizer=folder)
        # The embeddings are initialised now. A saved adapter reloads them and never needs the
        # text again, but PEFT would try to reload the (deleted) tokenizer whenever the adapter is
        # loaded for training; the run's config.yaml keeps the init that was used.
        config = wrapped.peft_config["default"]
        config.prompt_tuning_init = "RANDOM"
        config.prompt_tuning_init_text = None
        config.tokenizer_name_or_path = None
        return self.prepare_model(wrapped)

    def check_adapter_config(self, adapter_config: dict[str, Any], path: Path) -> None:
        tokens = adapter_config.get("num_virtual_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ModelSpecError(f"{path}: num_virtual_tokens must be a positive integer, got {tokens!r}")
        super().check_adapter_config(adapter_config, path)

    def prepare_model(self, model: Any) -> Any:
        """Make PEFT's ``generate`` use the KV cache correctly (see :func:`cache_name_bridge`)."""
        cache_name_bridge(model)
        return model

    def describe(self, settings: PromptTuningSettings, model_type: str) -> dict[str, Any]:
        return settings.to_dict()


def cache_name_bridge(model: Any) -> None:
    """Let PEFT's prompt-learning generation see the KV cache under the name transformers 5 uses.

    PEFT (0.21) finds the cache in ``past_key_values``; transformers 5 passes it as ``cache``. PEFT
    then takes every decoding step for the first one: it prepends the virtual tokens again before
    each new token (they pile up in the cache: wrong summaries, ~8x slower). Around PEFT's
    ``prepare_inputs_for_generation`` the cache is handed over under the old name and given back
    under the new one; nothing else changes. A no-op where the names agree, and for seq2seq models
    (their virtual tokens go into the encoder once).
    """
    prepare = getattr(model, "base_model_prepare_inputs_for_generation", None)
    if prepare is None or getattr(model, "_dialogtune_cache_bridge", False):
        return
    try:
        if "cache" not in inspect.signature(prepare).parameters:
            return  # transformers still calls it past_key_values
    except (TypeError, ValueError):
        return
    peft_prepare = model.prepare_inputs_for_generation

    def base_with_old_name(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = prepare(*args, **kwargs)
        if "cache" in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    def bridged(*args: Any, **kwargs: Any) -> dict[str, Any]:
        model.base_model_prepare_inputs_for_generation = base_with_old_name
        try:
            inputs = peft_prepare(*args, **kwargs)
        finally:
            model.base_model_prepare_inputs_for_generation = prepare
        if "past_key_values" in inputs:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    model.prepare_inputs_for_generation = bridged
    model._dialogtune_cache_bridge = True


METHOD = PromptTuningMethod(
    name="prompt_tuning",
    summary="prompt tuning: trained embeddings of virtual tokens before every input (weights untouched)",
    settings_cls=PromptTuningSettings,
    peft_type="PROMPT_TUNING",
    prepends_tokens=True,
    mergeable=False,
    not_mergeable_because="prompt tuning adds virtual tokens; it changes no weight",
)
