"""PEFT adapters (LoRA, DoRA, IA3, prompt tuning): attach (frozen or trainable), identify their base, merge.

PEFT's adapter folder is the hand-off between train, evaluate and serve. We add a
small ``dialogtune_base.json`` recording the base model's architecture, so that an
adapter made for another base is caught with a clear message instead of a shape
error deep inside PEFT (or, worse, silently loading onto a same-shaped model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel

from dialogtune.errors import ModelSpecError
from dialogtune.methods import method_of_model
from dialogtune.models.loaded import LoadedModel, innermost

BASE_FILE = "dialogtune_base.json"
_SIGNATURE_KEYS = (
    "model_type",
    "vocab_size",
    "d_model",
    "hidden_size",
    "num_layers",
    "num_hidden_layers",
    "num_heads",
    "num_attention_heads",
    "d_ff",
    "intermediate_size",
)


def base_signature(model: PreTrainedModel) -> dict[str, Any]:
    config = model.config.to_dict()
    return {key: config[key] for key in _SIGNATURE_KEYS if key in config}


def write_base_info(adapter_dir: str | Path, loaded: LoadedModel) -> None:
    info = {
        "base_model": loaded.spec.raw,
        "random_weights": loaded.spec.is_random,
        "signature": base_signature(innermost(loaded.model)),
    }
    Path(adapter_dir, BASE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def check_adapter(adapter_dir: str | Path, model: PreTrainedModel) -> dict[str, Any]:
    """Validate that ``adapter_dir`` is a PEFT adapter made for ``model``; return its base info."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise ModelSpecError(f"adapter directory not found: {adapter_dir}")
    if not (folder / "adapter_config.json").is_file():
        raise ModelSpecError(f"{adapter_dir} is not a PEFT adapter (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ModelSpecError(
            f"{adapter_dir} has no adapter_model.safetensors (pickled adapters are not loaded)"
        )
    info_path = folder / BASE_FILE
    info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    expected = info.get("signature")
    actual = base_signature(innermost(model))
    if expected is not None and expected != actual:
        raise ModelSpecError(
            f"adapter {adapter_dir} was trained for base '{info.get('base_model')}' "
            f"({expected.get('model_type')}), which does not match this model ({actual.get('model_type')}, "
            f"different shapes); pass the adapter's base with --model"
        )
    return info


def attach_adapter(
    loaded: LoadedModel, adapter_dir: str | Path, *, trainable: bool = False, name: str = "default"
) -> None:
    """Load a PEFT adapter onto ``loaded.model`` (frozen unless ``trainable``), in place."""
    check_adapter(adapter_dir, loaded.model)
    try:
        if isinstance(loaded.model, PeftModel):
            loaded.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=trainable)
        else:
            loaded.model = PeftModel.from_pretrained(
                loaded.model, str(adapter_dir), adapter_name=name, is_trainable=trainable
            )
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelSpecError(
            f"adapter {adapter_dir} does not fit this base model: {str(exc).splitlines()[0][:200]}"
        ) from exc
    if not trainable:
        # PEFT freezes LoRA-style layers of a frozen adapter, but leaves a prompt encoder's
        # embeddings trainable; a model for inference trains nothing.
        loaded.model.requires_grad_(False)
    method = method_of_model(loaded.model)
    if method is not None:
        loaded.model = method.prepare_model(loaded.model)
    loaded.adapter = str(adapter_dir)
    loaded.model.eval()


def merge_adapter(loaded: LoadedModel) -> PreTrainedModel:
    """Fold the adapter into the base weights (LoRA: W + BA·alpha/r) and drop PEFT.

    Only methods that change weights can be folded; the method object says which
    (prompt tuning adds virtual tokens instead, so it has nothing to fold).
    """
    if not isinstance(loaded.model, PeftModel):
        raise ModelSpecError("no adapter loaded: nothing to merge")
    method = method_of_model(loaded.model)
    if method is None or not method.mergeable:
        name = method.name if method is not None else "this kind of"
        raise ModelSpecError(
            f"{name} adapters cannot be merged into the base weights ({_why_not(method)}); "
            "use the base model with --adapter instead"
        )
    merged = loaded.model.merge_and_unload()
    loaded.model = merged
    loaded.adapter_merged = True
    return merged


def _why_not(method: Any) -> str:
    return getattr(method, "not_mergeable_because", None) or "PEFT cannot merge it"
