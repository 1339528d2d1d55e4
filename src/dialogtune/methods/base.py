"""What a fine-tuning method is, and what every PEFT method shares.

A method is one object (``METHOD`` in its module) that the recipe, the runner, config
validation, ``params``, ``merge``, inference loading and the report ask instead of comparing
strings. Its settings dataclass is the YAML section named after it (``lora:``, ``ia3:``) and
the ``params --<name>-<field>`` flags; it must stay torch-free, so configs validate without
loading torch. Everything that touches a model imports torch and peft inside the function.

Adding a method: a module beside this one with a settings dataclass and a ``METHOD``, and its
name in :data:`dialogtune.methods.registry.BUILTIN`. Nothing else changes (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dialogtune.errors import ConfigError, ModelSpecError

if TYPE_CHECKING:
    import torch

    from dialogtune.models.contract import InferenceContract
    from dialogtune.models.kinds import ModelKind
    from dialogtune.models.loaded import LoadedModel

KINDS = ("seq2seq", "causal")


@runtime_checkable
class Method(Protocol):
    """The interface every method object has (see the module docstring)."""

    name: str  # the ``method:`` value, the YAML section name and the params flag prefix
    summary: str  # one line: what it trains
    settings_cls: type | None  # the YAML section's dataclass; None: the method has no settings
    weights_folder: str  # "adapter" (a PEFT adapter for the base) or "model" (a whole model)
    kinds: tuple[str, ...]  # model kinds it supports ("seq2seq", "causal")
    trains_base: bool  # updates the base weights (full) or leaves them frozen (PEFT methods)
    # Frozen Linear weights may be stored in bf16 under bf16 autocast with identical results
    # (training.frozen_weights: auto); false where the method reads the base weights outside a matmul.
    exact_bf16_base: bool
    prepends_tokens: bool  # virtual tokens shift the positions (no selective loss)
    mergeable: bool  # PEFT can fold the trained update into the base weights
    servable_unmerged: bool  # the multi-adapter server can apply it per request, unmerged
    peft_type: str | None  # PEFT's peft_type in adapter_config.json

    def check(self, settings: Any, kind: ModelKind, model_type: str) -> None: ...

    def apply(
        self,
        model: torch.nn.Module,
        settings: Any = None,
        kind: ModelKind | None = None,
        *,
        tokenizer: Any = None,
    ) -> torch.nn.Module: ...

    def describe(self, settings: Any, model_type: str) -> dict[str, Any]: ...

    def recognises(self, adapter_config: dict[str, Any]) -> bool: ...

    def check_adapter_config(self, adapter_config: dict[str, Any], path: Path) -> None: ...

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...


def model_kind(model: torch.nn.Module) -> ModelKind:
    """Seq2seq or causal, from the model's own config (when a caller does not pass the kind)."""
    from dialogtune.models.kinds import kind_for_config

    return kind_for_config(model.config)


def default_settings(method: Method) -> Any:
    return method.settings_cls() if method.settings_cls is not None else None


def settings_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else {}


def check_kind(method: Method, kind: ModelKind, why: str = "") -> None:
    """A one-line error when ``method`` cannot train a ``kind`` model."""
    if kind.name not in method.kinds:
        reason = f": {why}" if why else ""
        raise ConfigError(
            f"method {method.name} does not support {kind.name} models{reason} "
            f"(it supports {', '.join(method.kinds)})"
        )


def split_modules(value: list[str] | str | None, key: str) -> list[str] | str | None:
    """``"q,v"`` -> ``["q", "v"]``; ``all-linear`` and ``None`` stay as they are."""
    if isinstance(value, str) and value != "all-linear":
        value = [m.strip() for m in value.split(",") if m.strip()]
        if not value:
            raise ConfigError(f"{key} must name at least one module")
    return value


def check_target_modules(adapter_config: dict[str, Any], path: Path) -> None:
    targets = adapter_config.get("target_modules")
    if targets is not None and not isinstance(targets, (str, list)):
        raise ModelSpecError(f"{path}: target_modules must be a list of names or a string, got {targets!r}")


# ---- what every method shares: counting, saving, loading -----------------------------------


def count_trainable(model: torch.nn.Module) -> dict[str, Any]:
    """Total and trainable parameters, as the notebook prints them.

    A PEFT model is counted by PEFT's own ``get_nb_trainable_parameters`` (the numbers its
    ``print_trainable_parameters`` shows); a plain model by its parameters (tied tensors once).
    """
    from dialogtune.models.params import count_parameters

    counter = getattr(model, "get_nb_trainable_parameters", None)
    if not callable(counter):
        return count_parameters(model)
    trainable, total = counter()
    return {
        "total": int(total),
        "trainable": int(trainable),
        "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0,
    }


def save_folder(
    loaded: LoadedModel,
    folder: Path,
    *,
    contract: InferenceContract,
    state_dict: dict[str, Any] | None = None,
    adapter: bool,
) -> None:
    """Write weights (an adapter or a whole model), tokenizer and inference contract into ``folder``.

    ``state_dict``: the full weights gathered from all processes (FSDP, DeepSpeed ZeRO-3
    shard them); PEFT picks its adapter's tensors out of it.
    """
    from dialogtune.models.adapters import write_base_info
    from dialogtune.models.contract import write_contract

    loaded.model.save_pretrained(str(folder), state_dict=state_dict, safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(folder))
    write_contract(folder, contract)
    if adapter:
        write_base_info(folder, loaded)


@dataclass(frozen=True)
class AdapterMethod:
    """What the PEFT methods share: they wrap the base with ``get_peft_model``, freeze it, save an
    adapter folder and load it back onto the base. A method module subclasses this with its
    settings class and :meth:`peft_config`."""

    name: str
    summary: str
    settings_cls: type | None
    peft_type: str
    kinds: tuple[str, ...] = KINDS
    weights_folder: str = "adapter"
    trains_base: bool = False
    exact_bf16_base: bool = True
    prepends_tokens: bool = False
    mergeable: bool = True
    servable_unmerged: bool = False
    not_mergeable_because: str | None = None

    def peft_config(self, settings: Any, kind: ModelKind, model_type: str, tokenizer: Any) -> Any:
        raise NotImplementedError

    def check(self, settings: Any, kind: ModelKind, model_type: str) -> None:
        check_kind(self, kind)

    def describe(self, settings: Any, model_type: str) -> dict[str, Any]:
        return settings_dict(settings)

    def recognises(self, adapter_config: dict[str, Any]) -> bool:
        return adapter_config.get("peft_type") == self.peft_type

    def check_adapter_config(self, adapter_config: dict[str, Any], path: Path) -> None:
        """A one-line :class:`ModelSpecError` for values PEFT would fail on with a traceback, and
        for keys its config class does not have (PEFT would drop them with a warning)."""
        import peft

        fields = {f.name for f in dataclasses.fields(peft.PEFT_TYPE_TO_CONFIG_MAPPING[self.peft_type])}
        unknown = sorted(str(key) for key in adapter_config if key not in fields)
        if unknown:
            listed = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ModelSpecError(
                f"{path}: keys that a {self.peft_type} adapter config does not have: {listed} "
                f"(written for another method, or by a newer PEFT than {peft.__version__})"
            )
        check_target_modules(adapter_config, path)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called on a model this method's adapter was just applied to or loaded onto."""
        return model

    def apply(
        self,
        model: torch.nn.Module,
        settings: Any = None,
        kind: ModelKind | None = None,
        *,
        tokenizer: Any = None,
    ) -> torch.nn.Module:
        """``model`` wrapped with fresh, trainable adapter weights; the base is frozen."""
        from peft import get_peft_model

        settings = settings if settings is not None else default_settings(self)
        kind = kind if kind is not None else model_kind(model)
        model_type = model.config.model_type
        self.check(settings, kind, model_type)
        config = self.peft_config(settings, kind, model_type, tokenizer)
        try:
            return get_peft_model(model, config)
        except (ValueError, TypeError, KeyError) as exc:  # e.g. target modules not in this model
            raise ConfigError(f"cannot apply {self.name}: {str(exc).splitlines()[0][:240]}") from exc

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
        save_folder(loaded, folder, contract=contract, state_dict=state_dict, adapter=True)

    def inference_inputs(self, base_model: str, weights_dir: str | Path) -> tuple[str, str | None]:
        """``(model, adapter)`` to load what a training run saved in ``weights_dir``."""
        return base_model, str(weights_dir)

    def load(self, base_model: str, weights_dir: str | Path, **kwargs: Any) -> LoadedModel:
        """The trained model for inference: the base + this adapter (frozen; merged when it can be)."""
        from dialogtune.models.inference import load_for_inference

        model, adapter = self.inference_inputs(base_model, weights_dir)
        return load_for_inference(model, adapter=adapter, **kwargs)
