"""(IA)³ through PEFT: trained vectors that rescale keys, values and the feed-forward activations
(Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning"). Far fewer parameters than LoRA (SmolLM2-135M: 57,600 against LoRA r=16's 4.9M);
merging multiplies the vectors into the weights.

The default modules are PEFT's own per family: T5 ``k, v, wo`` (``wo`` scaled on its input, a
feed-forward module), Llama ``k_proj, v_proj, down_proj`` (``down_proj`` feed-forward).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from dialogtune.errors import ConfigError
from dialogtune.methods.base import AdapterMethod, split_modules


@dataclass
class IA3Settings:
    """(IA)³ modules: which layers get a scaling vector, and which of them are feed-forward."""

    SECTION: ClassVar[str] = "ia3"

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "comma-separated module names to rescale, or null for PEFT's family default"},
    )
    feedforward_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "those of target_modules that are feed-forward (scaled on their input); "
            "null: PEFT's family default"
        },
    )

    def __post_init__(self) -> None:
        self.target_modules = split_modules(self.target_modules, "ia3.target_modules")
        self.feedforward_modules = split_modules(self.feedforward_modules, "ia3.feedforward_modules")
        if self.feedforward_modules and not self.target_modules:
            raise ConfigError("ia3.feedforward_modules needs ia3.target_modules (a subset of them)")
        if isinstance(self.target_modules, list) and isinstance(self.feedforward_modules, list):
            extra = [m for m in self.feedforward_modules if m not in self.target_modules]
            if extra:
                raise ConfigError(
                    f"ia3.feedforward_modules must be among ia3.target_modules; not: {', '.join(extra)}"
                )

    def resolved(self, model_type: str) -> tuple[list[str] | str, list[str] | str]:
        """``(target_modules, feedforward_modules)`` for ``model_type``."""
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
        )
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        targets = self.target_modules or TARGETS.get(model_type)
        if targets is None:
            raise ConfigError(
                f"ia3 has no default modules for model type '{model_type}'; "
                "set ia3.target_modules and ia3.feedforward_modules"
            )
        if self.feedforward_modules is not None:
            return targets, self.feedforward_modules
        if self.target_modules:  # chosen modules: PEFT's feed-forward defaults among them
            default = FEEDFORWARD.get(model_type, [])
            return targets, [m for m in default if isinstance(targets, list) and m in targets]
        return targets, list(FEEDFORWARD.get(model_type, []))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class IA3Method(AdapterMethod):
    def peft_config(self, settings: IA3Settings, kind: Any, model_type: str, tokenizer: Any) -> Any:
        from peft import IA3Config

        targets, feedforward = settings.resolved(model_type)
        return IA3Config(
            target_modules=targets, feedforward_modules=feedforward, task_type=kind.peft_task_type
        )

    def describe(self, settings: IA3Settings, model_type: str) -> dict[str, Any]:
        targets, feedforward = settings.resolved(model_type)
        return {"target_modules": targets, "feedforward_modules": feedforward}


METHOD = IA3Method(
    name="ia3",
    summary="(IA)3: trained vectors rescaling keys, values and feed-forward activations",
    settings_cls=IA3Settings,
    peft_type="IA3",
)
