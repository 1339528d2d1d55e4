"""LoRA settings and their application through PEFT (no hand-written LoRA)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from dialogtune.errors import ConfigError

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

    r: int = field(default=32, metadata={"help": "rank of the update matrices"})
    alpha: int = field(default=32, metadata={"help": "scaling numerator: the update is scaled by alpha/r"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "module names, 'all-linear', or None for the family default"}
    )
    bias: str = "none"

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be a positive integer, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"lora.bias must be none, all or lora_only, got '{self.bias}'")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def resolved_targets(self, model_type: str) -> list[str] | str:
        if self.target_modules:
            return self.target_modules
        if model_type not in DEFAULT_TARGETS:
            return "all-linear"
        return DEFAULT_TARGETS[model_type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def lora_config(settings: LoraSettings, model: PreTrainedModel) -> LoraConfig:
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.resolved_targets(model.config.model_type),
        bias=settings.bias,
        task_type=task,
    )


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with fresh LoRA layers; only they are trainable."""
    try:
        return get_peft_model(model, lora_config(settings, model))
    except ValueError as exc:
        raise ConfigError(f"cannot apply LoRA: {str(exc).splitlines()[0]}") from exc
