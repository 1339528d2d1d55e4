"""Full fine-tuning: every weight is trained; the run saves a whole model (``model/``).

No settings section: what matters (learning rate, precision, checkpointing) is in ``training:``.
Memory: the weights, their gradients and AdamW's two moments (4 copies in fp32, 16 bytes per
parameter: SmolLM2-135M needs 2.2 GB before activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialogtune.errors import ModelSpecError
from dialogtune.methods.base import KINDS, check_kind, count_trainable, model_kind, save_folder

if TYPE_CHECKING:
    import torch

    from dialogtune.models.contract import InferenceContract
    from dialogtune.models.kinds import ModelKind
    from dialogtune.models.loaded import LoadedModel


@dataclass(frozen=True)
class FullMethod:
    name: str = "full"
    summary: str = "full fine-tuning: every weight is trained; saves the whole model"
    settings_cls: type | None = None
    weights_folder: str = "model"
    kinds: tuple[str, ...] = KINDS
    trains_base: bool = True
    exact_bf16_base: bool = False  # nothing is frozen
    prepends_tokens: bool = False
    mergeable: bool = False  # nothing to merge: the saved model is the result
    servable_unmerged: bool = False
    peft_type: str | None = None
    not_mergeable_because: str | None = "a fully fine-tuned model is already a whole model"

    def check(self, settings: Any, kind: ModelKind, model_type: str) -> None:
        check_kind(self, kind)

    def apply(
        self,
        model: torch.nn.Module,
        settings: Any = None,
        kind: ModelKind | None = None,
        *,
        tokenizer: Any = None,
    ) -> torch.nn.Module:
        self.check(settings, kind if kind is not None else model_kind(model), model.config.model_type)
        model.requires_grad_(True)
        return model

    def describe(self, settings: Any, model_type: str) -> dict[str, Any]:
        return {}

    def recognises(self, adapter_config: dict[str, Any]) -> bool:
        return False  # never an adapter

    def check_adapter_config(self, adapter_config: dict[str, Any], path: Path) -> None:
        raise ModelSpecError(f"{path}: full fine-tuning saves a whole model, not an adapter")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def count_parameters(self, model: torch.nn.Module) -> dict[str, Any]:
        return count_trainable(model)

    def save(
        self,
        loaded: LoadedModel,
        folder: Path,
        *,
        contract: InferenceContract,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        save_folder(loaded, folder, contract=contract, state_dict=state_dict, adapter=False)

    def inference_inputs(self, base_model: str, weights_dir: str | Path) -> tuple[str, str | None]:
        return str(weights_dir), None

    def load(self, base_model: str, weights_dir: str | Path, **kwargs: Any) -> LoadedModel:
        from dialogtune.models.inference import load_for_inference

        return load_for_inference(str(weights_dir), **kwargs)


METHOD = FullMethod()
