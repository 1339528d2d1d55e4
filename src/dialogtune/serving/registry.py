"""Many LoRA adapters over one base model in memory.

The first adapter wraps the base in a ``PeftModel``; every later one is added with
``load_adapter``. Nothing is ever merged or switched globally: each generate call
names the adapter of every row (``adapter_names``, ``"__base__"`` for the bare
base), so one batch may mix adapters and no call depends on ``set_adapter`` state.

Thread-safety: the registry itself takes no locks. Everything that touches the model
(``load`` and ``generate``) must run on the single model thread owned by
:class:`~dialogtune.serving.batcher.MicroBatcher`; readers on the event loop only look
at ``infos``, which gains an entry only after its adapter is fully loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from peft import PeftModel
from peft.tuners.lora import LoraLayer

from dialogtune.errors import ModelSpecError
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.adapters import attach_adapter, check_adapter
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate
from dialogtune.serving.schemas import ADAPTER_NAME_PATTERN, AdapterInfo

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in adapter_names


def parse_adapter_arg(text: str) -> tuple[str, str]:
    """``NAME=DIR`` (the ``--adapter`` flag of ``serve``) → (name, dir); a bare DIR is named after its folder."""
    name, sep, path = text.partition("=")
    if not sep:
        path, name = text, Path(text.rstrip("/")).name
    if not path:
        raise ModelSpecError(f"--adapter '{text}': expected NAME=DIR")
    _check_name(name)
    return name, path


def _check_name(name: str) -> None:
    if not re.fullmatch(ADAPTER_NAME_PATTERN, name):
        raise ModelSpecError(
            f"adapter name '{name}' must be 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )


def _read_adapter_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{folder}: unreadable adapter_config.json ({exc})") from exc


class AdapterRegistry:
    """One base model and the adapters loaded on it, by name."""

    def __init__(self, loaded: LoadedModel) -> None:
        if isinstance(loaded.model, PeftModel):
            raise ModelSpecError("the registry needs the bare base model; add adapters with load()")
        self.loaded = loaded
        self.infos: dict[str, AdapterInfo] = {}

    @property
    def model_name(self) -> str:
        return self.loaded.spec.raw

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def load(self, name: str, path: str | Path) -> AdapterInfo:
        """Validate and load the adapter in ``path`` under ``name`` (model thread only)."""
        _check_name(name)
        if name in self.infos:
            raise ModelSpecError(f"an adapter named '{name}' is already loaded")
        folder = Path(path)
        base_info = check_adapter(folder, self.loaded.model)  # safetensors only, same base shapes
        config = _read_adapter_config(folder)
        if config.get("peft_type", "LORA") != "LORA":
            raise ModelSpecError(
                f"{folder} is a {config.get('peft_type')} adapter; only LoRA adapters are served"
            )
        if config.get("use_dora"):
            # PEFT cannot mix DoRA adapters with others in one batch (adapter_names).
            raise ModelSpecError(f"{folder} is a DoRA adapter; merge it with 'dialogtune merge' to serve it")
        try:
            attach_adapter(self.loaded, folder, trainable=False, name=name)
        except Exception as exc:
            self._forget_partial(name)
            if isinstance(exc, ModelSpecError):
                raise
            # e.g. a cut-off safetensors file: still the user's to fix, so one line, not a traceback
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ModelSpecError(f"cannot load adapter {folder}: {first_line}") from exc
        self.loaded.adapter = None  # the registry's base has no "current" adapter
        targets = config.get("target_modules") or []
        info = AdapterInfo(
            name=name,
            path=str(folder.resolve()),
            base_model=base_info.get("base_model"),
            rank=config.get("r"),
            alpha=config.get("lora_alpha"),
            target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
            size_bytes=(folder / "adapter_model.safetensors").stat().st_size,
        )
        self.infos[name] = info  # published last: a name is visible only once usable
        return info

    def _forget_partial(self, name: str) -> None:
        """Undo what a failed load left behind, so the served model stays as it was.

        PEFT injects LoRA layers before it loads their weights: a failure in between
        leaves layers named ``name`` (or, for the first adapter, layers inside the bare
        base, which ``loaded.model`` still points to).
        """
        model = self.loaded.model
        if isinstance(model, PeftModel):
            if name in model.peft_config:
                model.delete_adapter(name)
            return
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, LoraLayer):
                    setattr(parent, child_name, child.get_base_layer())
        if "peft_config" in vars(model):  # PEFT's marker on a wrapped base
            del model.peft_config

    def adapter_names(self, adapters: Sequence[str | None]) -> list[str] | None:
        """Per-row names for PEFT; ``None`` while no adapter is loaded (a plain model)."""
        if not isinstance(self.loaded.model, PeftModel):
            if any(a is not None for a in adapters):
                raise ModelSpecError("no adapters are loaded")
            return None
        unknown = sorted({a for a in adapters if a is not None and a not in self.infos})
        if unknown:
            raise ModelSpecError(f"unknown adapter(s): {', '.join(unknown)}")
        return [BASE_ROW if a is None else a for a in adapters]

    def generate(
        self,
        dialogues: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        template: PromptTemplate,
    ) -> list[str]:
        """Summaries for ``dialogues``, row i with adapter ``adapters[i]`` (model thread only)."""
        names = self.adapter_names(adapters)
        result = generate(
            self.loaded, list(dialogues), settings, template, progress=False, adapter_names=names
        )
        return result.texts

    def describe(self) -> dict:
        return {
            "model": self.model_name,
            "kind": self.loaded.kind.name,
            "random_weights": self.loaded.spec.is_random,
            "adapters": list(self.infos.values()),
        }
