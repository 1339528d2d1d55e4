"""PEFT adapters (LoRA, DoRA, IA3, prompt tuning): attach (frozen or trainable), identify their base, merge.

PEFT's adapter folder is the hand-off between train, evaluate and serve. We add a
small ``dialogtune_base.json`` recording the base model's architecture, so that an
adapter made for another base is caught with a clear message instead of a shape
error deep inside PEFT (or, worse, silently loading onto a same-shaped model).

Every file of the folder is checked (:mod:`dialogtune.models.files`): JSON that parses, an
``adapter_config.json`` of a method dialogtune knows (checked by the method), a complete safetensors file whose tensors are exactly the ones
that config describes. PEFT itself would load a cut-off config with a traceback and a
weights file of another adapter with a warning, leaving its layers at their initial values.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel

from dialogtune.errors import ModelSpecError
from dialogtune.io import read_json_file
from dialogtune.methods import all_methods, method_for_adapter_config, method_of_model
from dialogtune.models.files import check_safetensors, loading
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
    check_adapter_config(folder / "adapter_config.json")
    info_path = folder / BASE_FILE
    info: dict[str, Any] = read_json_file(info_path, ModelSpecError) if info_path.exists() else {}
    expected = info.get("signature")
    if expected is not None and not isinstance(expected, dict):
        raise ModelSpecError(f"{info_path}: 'signature' must be an object, got {type(expected).__name__}")
    actual = base_signature(innermost(model))
    if expected is not None and expected != actual:
        raise ModelSpecError(
            f"adapter {adapter_dir} was trained for base '{info.get('base_model')}' "
            f"({expected.get('model_type')}), which does not match this model ({actual.get('model_type')}, "
            f"different shapes); pass the adapter's base with --model"
        )
    return info


def check_adapter_config(path: Path) -> dict[str, Any]:
    """Read a PEFT ``adapter_config.json``; it must be an adapter of a method dialogtune knows,
    whose own checks it passes (LoRA: a positive rank, a numeric alpha)."""
    config = read_json_file(path, ModelSpecError)
    method = method_for_adapter_config(config)
    if method is None:
        adapters = [m.name for m in all_methods() if m.peft_type is not None]
        raise ModelSpecError(
            f"{path}: peft_type is {config.get('peft_type')!r}; dialogtune loads adapters of its methods "
            f"({', '.join(adapters)}) only"
        )
    method.check_adapter_config(config, path)
    return config


def _check_loaded_weights(adapter_dir: str | Path, model: PeftModel, name: str) -> None:
    """The weights file must hold exactly the tensors PEFT would save for this adapter.

    PEFT only warns about missing keys and leaves those weights at their initial values
    (LoRA's B = 0: the adapter silently does nothing there).
    """
    from peft.utils import get_peft_model_state_dict

    path = Path(adapter_dir) / "adapter_model.safetensors"
    expected = set(get_peft_model_state_dict(model, adapter_name=name))
    found = set(check_safetensors(path))
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ModelSpecError(
            f"{path} does not match its adapter_config.json: {len(missing)} adapter weights missing, "
            f"{len(unexpected)} unexpected (e.g. {example})"
        )


def attach_adapter(
    loaded: LoadedModel, adapter_dir: str | Path, *, trainable: bool = False, name: str = "default"
) -> None:
    """Load a PEFT adapter onto ``loaded.model`` (frozen unless ``trainable``), in place."""
    check_adapter(adapter_dir, loaded.model)
    # The weights file last: a caller such as the server refuses by the config first.
    check_safetensors(Path(adapter_dir) / "adapter_model.safetensors")
    had_adapters = isinstance(loaded.model, PeftModel)
    with loading(f"adapter {adapter_dir} onto this base model"), warnings.catch_warnings():
        # Reported as one clear error by _check_loaded_weights, not as PEFT's list of keys.
        warnings.filterwarnings("ignore", message="Found missing adapter keys")
        if isinstance(loaded.model, PeftModel):
            loaded.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=trainable)
        else:
            loaded.model = PeftModel.from_pretrained(
                loaded.model, str(adapter_dir), adapter_name=name, is_trainable=trainable
            )
    try:
        _check_loaded_weights(adapter_dir, loaded.model, name)
    except ModelSpecError:  # leave the model as it was: a server keeps serving its other adapters
        if had_adapters:
            loaded.model.delete_adapter(name)
        else:
            loaded.model = loaded.model.unload()
        raise
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
