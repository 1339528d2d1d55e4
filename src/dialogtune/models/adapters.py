"""LoRA adapters: attach (frozen or trainable), identify their base, merge.

PEFT's adapter folder is the hand-off between train, evaluate and serve. We add a
small ``dialogtune_base.json`` recording the base model's architecture, so that an
adapter made for another base is caught with a clear message instead of a shape
error deep inside PEFT (or, worse, silently loading onto a same-shaped model).

Every file of the folder is checked (:mod:`dialogtune.models.files`): JSON that parses, a
LoRA ``adapter_config.json``, a complete safetensors file whose tensors are exactly the ones
that config describes. PEFT itself would load a cut-off config with a traceback and a
weights file of another adapter with a warning, leaving its layers at their initial values.
"""

from __future__ import annotations

import json
import warnings
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft import PeftModel
from transformers import PreTrainedModel

from dialogtune.errors import ModelSpecError
from dialogtune.io import read_json_file
from dialogtune.models.files import check_safetensors, loading

if TYPE_CHECKING:
    from dialogtune.models.loading import LoadedModel

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
        "signature": base_signature(_base_model(loaded.model)),
    }
    Path(adapter_dir, BASE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _base_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    return model.get_base_model() if isinstance(model, PeftModel) else model


def check_adapter(adapter_dir: str | Path, model: PreTrainedModel) -> dict[str, Any]:
    """Validate that ``adapter_dir`` is a LoRA adapter made for ``model``; return its base info."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise ModelSpecError(f"adapter directory not found: {adapter_dir}")
    if not (folder / "adapter_config.json").is_file():
        raise ModelSpecError(f"{adapter_dir} is not a PEFT adapter (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ModelSpecError(
            f"{adapter_dir} has no adapter_model.safetensors (pickled adapters are not loaded)"
        )
    check_lora_config(folder / "adapter_config.json")
    info_path = folder / BASE_FILE
    info: dict[str, Any] = read_json_file(info_path, ModelSpecError) if info_path.exists() else {}
    expected = info.get("signature")
    if expected is not None and not isinstance(expected, dict):
        raise ModelSpecError(f"{info_path}: 'signature' must be an object, got {type(expected).__name__}")
    actual = base_signature(_base_model(model))
    if expected is not None and expected != actual:
        raise ModelSpecError(
            f"adapter {adapter_dir} was trained for base '{info.get('base_model')}' "
            f"({expected.get('model_type')}), which does not match this model ({actual.get('model_type')}, "
            f"different shapes); pass the adapter's base with --model"
        )
    return info


def check_lora_config(path: Path) -> dict[str, Any]:
    """Read a PEFT ``adapter_config.json`` and check that it describes a LoRA adapter."""
    config = read_json_file(path, ModelSpecError)
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ModelSpecError(
            f"{path}: peft_type is {peft_type!r}; dialogtune loads LoRA adapters (peft_type 'LORA') only"
        )
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ModelSpecError(f"{path}: r must be a positive integer, got {rank!r}")
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise ModelSpecError(f"{path}: lora_alpha must be a number, got {alpha!r}")
    targets = config.get("target_modules")
    if targets is not None and not isinstance(targets, (str, list)):
        raise ModelSpecError(f"{path}: target_modules must be a list of names or a string, got {targets!r}")
    return config


def _check_loaded_weights(adapter_dir: str | Path, model: PeftModel, name: str) -> None:
    """The weights file must hold exactly the tensors PEFT would save for this adapter.

    PEFT only warns about missing keys and leaves those LoRA matrices at their initial values
    (B = 0: the adapter silently does nothing there).
    """
    from peft.utils import get_peft_model_state_dict

    path = Path(adapter_dir) / "adapter_model.safetensors"
    expected = set(get_peft_model_state_dict(model, adapter_name=name))
    found = set(check_safetensors(path))
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ModelSpecError(
            f"{path} does not match its adapter_config.json: {len(missing)} LoRA weights missing, "
            f"{len(unexpected)} unexpected (e.g. {example})"
        )


def attach_adapter(
    loaded: LoadedModel, adapter_dir: str | Path, *, trainable: bool = False, name: str = "default"
) -> None:
    """Load a LoRA adapter onto ``loaded.model`` (frozen unless ``trainable``), in place."""
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
    loaded.adapter = str(adapter_dir)
    loaded.model.eval()


def merge_adapter(loaded: LoadedModel) -> PreTrainedModel:
    """Fold the LoRA update into the base weights (W + BA·alpha/r) and drop PEFT."""
    if not isinstance(loaded.model, PeftModel):
        raise ModelSpecError("no adapter loaded: nothing to merge")
    merged = loaded.model.merge_and_unload()
    loaded.model = merged
    return merged
