"""Many LoRA adapters over one base model in memory.

The first adapter wraps the base in a ``PeftModel``; every later one is added with
``load_adapter``. Nothing is ever merged or switched globally: each generate call
names the adapter of every row (``adapter_names``, ``"__base__"`` for the bare
base), so one batch may mix adapters and no call depends on ``set_adapter`` state.
(The ragged engine runs a step whose rows all use one adapter through a direct path
with the same arithmetic: :mod:`dialogtune.generation.uniform_rows`.)

All adapters share the base's modules, so an adapter may only *add* LoRA layers.
Adapters that would change what the others see (``modules_to_save``, trained biases,
replicated layers, ...) are refused from their config (:func:`unservable_reason`).
As a second line, every load ends with a self-check: a one-token probe through the
base and every adapter must give the logits each gave when it was loaded, and no
module may be wrapped by anything but LoRA. A load that fails either way, or fails
half-way, is undone completely; should undoing not restore the probe's answers,
``problem`` says so (``/health`` then reports an error).

``unload`` takes an adapter out again with PEFT's ``delete_adapter``, which frees its
weights, and self-checks what stays.

Thread-safety: the registry itself takes no locks. Everything that touches the model
(``load``, ``unload``, ``generate``, ``check``) must run on the single model thread owned
by the batcher; readers on the event loop only look at ``infos``, which gains an entry
only after its adapter is fully loaded, and at ``problem``. To unload, the event loop
first withdraws the name from ``infos`` (:meth:`AdapterRegistry.withdraw`: no new request
can pick it), then the model thread deletes the weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper

from dialogtune.errors import ModelSpecError
from dialogtune.generation import GenerationSettings, generate_ids
from dialogtune.generation.uniform_rows import BASE_ROW
from dialogtune.methods import all_methods, method_for_adapter_config
from dialogtune.models.adapters import attach_adapter, check_adapter
from dialogtune.models.contract import InferenceContract, read_contract
from dialogtune.models.loading import LoadedModel
from dialogtune.models.lora_rows import pad_adapter_rows
from dialogtune.prompts import PromptTemplate
from dialogtune.serving.schemas import ADAPTER_NAME_PATTERN, AdapterInfo

_PROBE = "#Person1#: Is this seat free?\n#Person2#: Yes, please sit down."
_MAX_ADAPTER_FILES = 10_000  # an adapter folder holds a handful; a larger tree is not one


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
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ModelSpecError(f"{folder}: unreadable adapter_config.json ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelSpecError(f"{folder}: adapter_config.json does not hold a JSON object")
    return config


def unservable_reason(config: dict) -> str | None:
    """Why an adapter (by its ``adapter_config.json``) cannot share the base with others; None if it can.

    Every adapter must leave the base as it is: it may add LoRA layers, nothing else.
    """
    merge = "merge it with 'dialogtune merge' and serve the merged model instead"
    method = method_for_adapter_config({"peft_type": "LORA", **config})
    if method is None or not method.servable_unmerged:
        # e.g. DoRA: PEFT cannot mix its rows with others in one batch (adapter_names)
        what = method.name if method is not None else config.get("peft_type")
        served = ", ".join(m.name for m in all_methods() if m.servable_unmerged)
        how = merge if method is not None and method.mergeable else "evaluate or summarize it with --adapter"
        return f"is a {what} adapter; only {served} adapters are served per request; {how}"
    if config.get("modules_to_save"):
        names = config["modules_to_save"]
        listed = ", ".join(map(str, names)) if isinstance(names, list) else str(names)
        return (
            f"replaces whole modules (modules_to_save: {listed}), which every other adapter and the "
            f"base would then see too; {merge}"
        )
    if config.get("trainable_token_indices"):
        return f"retrains token embeddings (trainable_token_indices), shared by every adapter; {merge}"
    if config.get("bias", "none") != "none":
        return f"trains the base model's biases (bias={config['bias']!r}), shared by every adapter; {merge}"
    if config.get("layer_replication"):
        return f"replicates base layers (layer_replication), which changes the base for everyone; {merge}"
    for key in ("alora_invocation_tokens", "target_parameters", "use_qalora", "use_bdlora", "arrow_config"):
        if config.get(key):
            return f"uses '{key}', which the server cannot mix with other adapters; {merge}"
    return None


def files_outside(folder: Path, root: Path) -> str | None:
    """The first file or folder of ``folder`` that resolves outside ``root`` (a symlink out), if any."""
    try:
        resolved = folder.resolve()
        if not resolved.is_relative_to(root):
            return (
                f"{folder} is outside it"
                if resolved == folder
                else f"{folder} resolves to {resolved}, outside it"
            )
        seen = 0
        for dirpath, dirnames, filenames in os.walk(resolved):  # links are checked, not followed
            for entry in (*dirnames, *filenames):
                seen += 1
                path = Path(dirpath, entry)
                target = path.resolve()
                if not target.is_relative_to(root):
                    return f"{path.relative_to(resolved)} in {folder} links to {target}, outside it"
            if seen > _MAX_ADAPTER_FILES:
                return f"{folder} holds more than {_MAX_ADAPTER_FILES} files; not an adapter folder"
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        return f"{folder} cannot be resolved ({exc})"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _label(name: str | None) -> str:
    return "the base model" if name is None else f"adapter '{name}'"


class AdapterRegistry:
    """One base model and the adapters loaded on it, by name."""

    def __init__(self, loaded: LoadedModel, *, merged: str | None = None) -> None:
        """``merged``: the name of the adapter folded into ``loaded`` (``serve --merged``); then
        only that adapter is served, and no other can be loaded."""
        if isinstance(loaded.model, PeftModel):
            raise ModelSpecError("the registry needs the bare base model; add adapters with load()")
        self.loaded = loaded
        self.merged = merged
        self.infos: dict[str, AdapterInfo] = {}
        self.contracts: dict[str, InferenceContract | None] = {}
        if merged is not None:
            if not loaded.adapter_merged or loaded.adapter is None:
                raise ModelSpecError("a merged registry needs a model with its adapter merged")
            folder = Path(loaded.adapter)
            config = _read_adapter_config(folder)
            targets = config.get("target_modules") or []
            self.infos[merged] = AdapterInfo(
                name=merged,
                path=str(folder.resolve()),
                base_model=loaded.spec.raw,
                rank=config.get("r"),
                alpha=config.get("lora_alpha"),
                target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
                size_bytes=(folder / "adapter_model.safetensors").stat().st_size,
            )
            self.contracts[merged] = read_contract(folder)
        self.problem: str | None = None  # set when the model no longer answers as loaded
        # What the probe gives through the base and each adapter, taken when it was loaded.
        self._fingerprints: dict[str | None, torch.Tensor] = {None: self._probe([None])[0]}

    @property
    def model_name(self) -> str:
        return self.loaded.spec.raw

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def load(self, name: str, path: str | Path) -> AdapterInfo:
        """Validate and load the adapter in ``path`` under ``name`` (model thread only).

        Raises ModelSpecError (the model unchanged) for anything that is not a servable
        adapter, including one that fails the self-check once loaded.
        """
        _check_name(name)
        if self.merged is not None:
            raise ModelSpecError(
                f"this server serves adapter '{self.merged}' merged into its base; start it without "
                "--merged to load others"
            )
        if name in self.infos:
            raise ModelSpecError(f"an adapter named '{name}' is already loaded")
        folder = Path(path)
        base_info = check_adapter(folder, self.loaded.model)  # safetensors only, same base shapes
        config = _read_adapter_config(folder)
        reason = unservable_reason(config)
        if reason is not None:
            raise ModelSpecError(f"{folder} {reason}")
        bare = None if isinstance(self.loaded.model, PeftModel) else self.loaded.model
        try:
            attach_adapter(self.loaded, folder, trainable=False, name=name)
            pad_adapter_rows(self.loaded.model)  # row-count-independent LoRA products (models/lora_rows.py)
            self.loaded.adapter = None  # the registry's base has no "current" adapter
            problem = self.self_check()  # the base and the adapters loaded before
            try:
                fingerprint = self._probe([name])[0]
            except Exception as exc:
                own = f"{_label(name)} fails ({type(exc).__name__}: {_first_line(exc)})"
                problem = f"{problem}; {own}" if problem else own
            if problem is not None:
                raise ModelSpecError(
                    f"cannot load adapter {folder}: it breaks the served model (self-check: {problem}); "
                    "it was taken out again"
                )
        except Exception as exc:
            self._undo(name, bare)
            if isinstance(exc, ModelSpecError):
                raise
            # e.g. a cut-off safetensors file: still the user's to fix, so one line, not a traceback
            raise ModelSpecError(f"cannot load adapter {folder}: {_first_line(exc)}") from exc
        self._fingerprints[name] = fingerprint
        self.contracts[name] = read_contract(folder)  # the prompt it was trained with
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

    def withdraw(self, name: str) -> AdapterInfo:
        """Hide adapter ``name`` from new requests before unloading it (event loop); ``restore``
        puts it back if the unload does not happen."""
        return self.infos.pop(name)

    def restore(self, info: AdapterInfo) -> None:
        self.infos[info.name] = info

    def unload(self, name: str) -> None:
        """Take adapter ``name`` out of the model and free its weights (model thread only).

        The caller makes sure no request uses it. PEFT's ``delete_adapter`` drops its LoRA
        matrices from every layer; the last adapter out also takes PEFT's wrapper layers with it
        (``unload()``), so the base is the bare model it was before any load. The self-check
        then confirms the base and the other adapters answer as before.
        """
        if self.merged is not None:
            raise ModelSpecError(f"this server serves adapter '{self.merged}' merged into its base")
        model = self.loaded.model
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            raise ModelSpecError(f"no adapter named '{name}' is loaded")
        self.infos.pop(name, None)
        self._fingerprints.pop(name, None)
        self.contracts.pop(name, None)
        with warnings.catch_warnings():  # rows name their adapter; the "active" one never matters here
            warnings.filterwarnings("ignore", message=".*was active which is now deleted")
            model.delete_adapter(name)
        if not model.peft_config:  # no adapter left: back to the bare base
            bare = model.unload()
            if "peft_config" in vars(bare):  # PEFT's marker on a wrapped base
                del bare.peft_config
            self.loaded.model = bare
        problem = self.check()
        if problem is not None:
            self.problem = f"unloading adapter '{name}' broke the served model: {problem}"

    def _undo(self, name: str, bare: torch.nn.Module | None) -> None:
        """Take out what a failed load left behind, so the served model is as it was.

        PEFT injects its layers before it loads their weights, and wraps modules named
        in ``modules_to_save``; a failure in between leaves them in place. For the first
        adapter they sit inside the bare base (``bare``), which becomes the model again.
        """
        model = self.loaded.model
        if bare is None and isinstance(model, PeftModel) and name in model.peft_config:
            model.delete_adapter(name)
        root = bare if bare is not None else model
        for parent in list(root.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, AuxiliaryTrainingWrapper):  # never part of a served model
                    setattr(parent, child_name, child.original_module)
                elif bare is not None and isinstance(child, BaseTunerLayer):
                    setattr(parent, child_name, child.get_base_layer())
        if bare is not None:
            self.loaded.model = bare
            if "peft_config" in vars(bare):  # PEFT's marker on a wrapped base
                del bare.peft_config
        self.loaded.adapter = None
        problem = self.self_check()
        if problem is not None:
            self.problem = f"undoing the failed load of adapter '{name}' did not restore the model: {problem}"

    @torch.inference_mode()
    def _probe(self, names: Sequence[str | None]) -> torch.Tensor:
        """Next-token logits for a fixed short prompt, one row per name (None: the base),
        in one forward pass with PEFT's per-row ``adapter_names``."""
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        batch = dict(tokenizer([_PROBE] * len(names), return_tensors="pt").to(self.loaded.device))
        batch.update(self.loaded.kind.first_step_inputs(model.config, len(names), self.loaded.device))
        if isinstance(model, PeftModel):
            batch["adapter_names"] = [BASE_ROW if name is None else name for name in names]
        elif any(name is not None for name in names):
            raise ModelSpecError("no adapters are loaded")
        return model(**batch).logits[:, -1].float().cpu()

    def self_check(self) -> str | None:
        """What is wrong with the served model (model thread only); None when nothing is.

        The probe through the base and every adapter must give the logits it gave when
        that adapter was loaded, and nothing but LoRA layers may wrap the base's modules.
        """
        problems = [
            f"{path} is wrapped by {type(module).__name__}"
            for path, module in self.loaded.model.named_modules()
            if isinstance(module, AuxiliaryTrainingWrapper)
        ][:1]
        names = list(self._fingerprints)
        try:
            rows = dict(zip(names, self._probe(names)))
        except Exception:  # one row at a time, to name the rows that fail
            rows = {}
            for name in names:
                try:
                    rows[name] = self._probe([name])[0]
                except Exception as exc:
                    problems.append(f"{_label(name)} fails ({type(exc).__name__}: {_first_line(exc)})")
        # Sums may differ in the last bits between batch layouts (more so in half precision);
        # a changed base, a missing layer or a swapped module moves the logits far more.
        tolerance = 1e-3 if self.loaded.model.dtype == torch.float32 else 3e-2
        for name, got in rows.items():
            expected = self._fingerprints[name]
            if (got - expected).abs().max() > tolerance * (1 + expected.abs().max()):
                problems.append(f"{_label(name)} answers differently than when it was loaded")
        return "; ".join(problems) or None

    def check(self) -> str | None:
        """Run the self-check and record its outcome in ``problem`` (model thread only)."""
        self.problem = self.self_check()
        return self.problem

    def model_adapter(self, adapter: str | None) -> str | None:
        """The adapter name the model knows: the merged adapter is the model itself (``None``)."""
        return None if adapter is not None and adapter == self.merged else adapter

    def adapter_names(self, adapters: Sequence[str | None]) -> list[str] | None:
        """Per-row names for PEFT; ``None`` while no adapter is loaded (a plain model)."""
        adapters = [self.model_adapter(a) for a in adapters]
        if not isinstance(self.loaded.model, PeftModel):
            if any(a is not None for a in adapters):
                raise ModelSpecError("no adapters are loaded")
            return None
        unknown = sorted({a for a in adapters if a is not None and a not in self.infos})
        if unknown:
            raise ModelSpecError(f"unknown adapter(s): {', '.join(unknown)}")
        return [BASE_ROW if a is None else a for a in adapters]

    def template_for(self, adapter: str | None, default: PromptTemplate) -> PromptTemplate:
        """An adapter's saved training prompt (its inference contract); the server's for the base."""
        contract = self.contracts.get(adapter) if adapter is not None else None
        return contract.prompt if contract is not None else default

    def prompt_ids(
        self,
        tokenizer: Any,
        dialogues: Sequence[str],
        adapter: str | None,
        settings: GenerationSettings,
        default: PromptTemplate,
    ) -> list[list[int]]:
        """Prompt token ids for ``dialogues`` with ``adapter``'s prompt, tokenized by ``tokenizer``
        (a copy owned by the calling thread: fast tokenizers are not shared across threads)."""
        from dialogtune.generation import build_prompts

        view = dataclasses.replace(self.loaded, tokenizer=tokenizer)
        prompts = build_prompts(
            view, dialogues, self.template_for(adapter, default), settings.max_dialogue_tokens
        )
        return self.loaded.kind.encode_prompts(tokenizer, prompts)

    def generate(
        self,
        dialogues: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        template: PromptTemplate,
    ) -> list[str]:
        """Summaries for ``dialogues``, row i with adapter ``adapters[i]`` and its prompt (model thread)."""
        names = self.adapter_names(adapters)
        encoded = [
            self.prompt_ids(self.loaded.tokenizer, [d], a, settings, template)[0]
            for d, a in zip(dialogues, adapters)
        ]
        result = generate_ids(self.loaded, encoded, settings, progress=False, adapter_names=names)
        return result.texts

    def describe(self) -> dict:
        return {
            "model": self.model_name,
            "kind": self.loaded.kind.name,
            "random_weights": self.loaded.spec.is_random,
            "adapters": list(self.infos.values()),
        }
