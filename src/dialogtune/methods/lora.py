"""LoRA through PEFT: a trained low-rank update B·A (scaled by alpha/r) beside frozen weights.

The notebook's method (r=32, alpha=32, q and v of FLAN-T5). ``use_rslora`` scales by
alpha/sqrt(r) instead (rank-stabilised LoRA, Kalajdzievski 2023), which keeps the update's
size steady as the rank grows. Merging folds W + B·A·scale into the base weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, ClassVar

from dialogtune.errors import ConfigError, ModelSpecError
from dialogtune.methods.base import AdapterMethod, split_modules

# Defaults per family: the notebook's q,v for T5; attention + MLP projections for the
# Llama family (what QLoRA/torchtune recipes use: better quality per parameter).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (the notebook: r=32, alpha=32, q/v, dropout 0.05)."""

    SECTION: ClassVar[str] = "lora"  # the YAML section (and key prefix in errors)

    r: int = field(default=32, metadata={"help": "rank of the update matrices"})
    alpha: int = field(
        default=32,
        metadata={"help": "scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA)"},
    )
    dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter's input"})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "comma-separated module names, all-linear, or null for the model family's default"},
    )
    bias: str = field(default="none", metadata={"help": "train biases too: none, all or lora_only"})
    use_rslora: bool = field(
        default=False, metadata={"help": "rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r"}
    )

    def __post_init__(self) -> None:
        key = self.SECTION
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"{key}.r must be a positive integer, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"{key}.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{key}.dropout must be in [0, 1), got {self.dropout}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"{key}.bias must be none, all or lora_only, got '{self.bias}'")
        self.target_modules = split_modules(self.target_modules, f"{key}.target_modules")

    def resolved_targets(self, model_type: str) -> list[str] | str:
        if self.target_modules:
            return self.target_modules
        return DEFAULT_TARGETS.get(model_type, "all-linear")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LoraMethod(AdapterMethod):
    use_dora: bool = False

    def peft_config(self, settings: LoraSettings, kind: Any, model_type: str, tokenizer: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=settings.resolved_targets(model_type),
            bias=settings.bias,
            use_rslora=settings.use_rslora,
            use_dora=self.use_dora,
            task_type=kind.peft_task_type,
        )

    def describe(self, settings: LoraSettings, model_type: str) -> dict[str, Any]:
        return {**settings.to_dict(), "target_modules": settings.resolved_targets(model_type)}

    def check_adapter_config(self, adapter_config: dict[str, Any], path: Path) -> None:
        rank = adapter_config.get("r")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ModelSpecError(f"{path}: r must be a positive integer, got {rank!r}")
        alpha = adapter_config.get("lora_alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, Real):
            raise ModelSpecError(f"{path}: lora_alpha must be a number, got {alpha!r}")
        super().check_adapter_config(adapter_config, path)

    def recognises(self, adapter_config: dict[str, Any]) -> bool:
        return (
            adapter_config.get("peft_type") == "LORA"
            and bool(adapter_config.get("use_dora")) == self.use_dora
        )


METHOD = LoraMethod(
    name="lora",
    summary="LoRA: a trained low-rank update beside frozen weights (r, alpha, target modules, rsLoRA)",
    settings_cls=LoraSettings,
    peft_type="LORA",
    servable_unmerged=True,  # the server applies LoRA adapters per request (PEFT's adapter_names)
)
