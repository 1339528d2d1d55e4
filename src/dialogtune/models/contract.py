"""The inference contract: how a fine-tuned model expects to be prompted.

A model fine-tuned on one prompt (template, chat mode, system message) and one dialogue
length answers best when it is used the same way. Training saves that contract beside the
weights (``dialogtune_inference.json`` in ``adapter/`` or ``model/``, as litgpt keeps
``prompt_style.yaml`` beside each checkpoint); ``evaluate``, ``generate``, ``summarize``,
``serve`` and ``merge`` use it unless a flag overrides a part of it.

Adapters and models trained before contracts existed are read from the training run's
``config.yaml`` next to them; their chat prompts kept the template's default system message,
which the contract then says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.config import read_yaml
from dialogtune.errors import DataError, DialogtuneError, ModelSpecError
from dialogtune.io import read_json_file
from dialogtune.prompts import PromptTemplate

CONTRACT_FILE = "dialogtune_inference.json"


@dataclass(frozen=True)
class InferenceContract:
    """What a fine-tuned model was trained with, for using it the same way."""

    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    max_dialogue_tokens: int | None = None
    max_target_tokens: int | None = None
    base_model: str | None = None
    method: str | None = None
    source: str = "contract"  # or "legacy" (read from the training run's config.yaml)

    def __post_init__(self) -> None:
        for key in ("max_dialogue_tokens", "max_target_tokens"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ModelSpecError(
                    f"inference contract: {key} must be a positive integer or null, got {value!r}"
                )
        for key in ("base_model", "method"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ModelSpecError(f"inference contract: {key} must be text, got {getattr(self, key)!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.to_dict(),
            "max_dialogue_tokens": self.max_dialogue_tokens,
            "max_target_tokens": self.max_target_tokens,
            "base_model": self.base_model,
            "method": self.method,
        }


def write_contract(folder: str | Path, contract: InferenceContract) -> None:
    Path(folder, CONTRACT_FILE).write_text(json.dumps(contract.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_contract(folder: str | Path | None) -> InferenceContract | None:
    """The contract saved in ``folder`` (an adapter or model directory), or ``None``."""
    if folder is None:
        return None
    path = Path(folder) / CONTRACT_FILE
    if path.exists():
        raw = read_json_file(path, ModelSpecError)  # malformed, not UTF-8, nested, ...: one line
        if not isinstance(raw.get("prompt") or {}, dict):
            raise ModelSpecError(f"{path}: unreadable inference contract (prompt must be an object)")
        try:
            return InferenceContract(
                prompt=PromptTemplate.from_dict(raw.get("prompt") or {}),
                max_dialogue_tokens=raw.get("max_dialogue_tokens"),
                max_target_tokens=raw.get("max_target_tokens"),
                base_model=raw.get("base_model"),
                method=raw.get("method"),
            )
        except (DialogtuneError, ValueError, TypeError, AttributeError) as exc:
            raise ModelSpecError(f"{path}: unreadable inference contract ({exc})") from None
    return _legacy(Path(folder))


def _legacy(folder: Path) -> InferenceContract | None:
    """A dialogtune training run from before contracts: its config.yaml sits one level up."""
    config_path = folder.parent / "config.yaml"
    if folder.name not in ("adapter", "model") or not config_path.is_file():
        return None
    try:
        config = read_yaml(config_path, DataError)
    except DataError:
        return None
    if not isinstance(config, dict) or "method" not in config:
        return None
    data = config.get("data") or {}
    try:
        prompt = dict(config.get("prompt") or {})
        if prompt.get("system") is None:
            prompt["keep_default_system"] = True  # what a null system meant then
        return InferenceContract(
            prompt=PromptTemplate.from_dict(prompt),
            max_dialogue_tokens=data.get("max_dialogue_tokens"),
            max_target_tokens=data.get("max_target_tokens"),
            base_model=config.get("model"),
            method=config.get("method"),
            source="legacy",
        )
    except Exception:  # an old config we cannot read is no contract at all
        return None


def contract_for(model: str, adapter: str | None) -> InferenceContract | None:
    """The contract that applies to ``--model`` + ``--adapter``: the adapter's, else the model folder's."""
    if adapter is not None:
        return read_contract(adapter)
    path = Path(model).expanduser()
    return read_contract(path) if path.is_dir() else None
