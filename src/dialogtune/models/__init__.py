"""Model specs → loaded model + tokenizer; kind detection; dtype/device; adapters."""

from dialogtune.models.kinds import CAUSAL, IGNORE_INDEX, SEQ2SEQ, ModelKind, kind_for_config
from dialogtune.models.loading import LoadedModel, load_model, load_tokenizer
from dialogtune.models.specs import DEFAULT_MODEL, ModelSpec, resolve_spec

__all__ = [
    "CAUSAL",
    "DEFAULT_MODEL",
    "IGNORE_INDEX",
    "SEQ2SEQ",
    "LoadedModel",
    "ModelKind",
    "ModelSpec",
    "kind_for_config",
    "load_model",
    "load_tokenizer",
    "resolve_spec",
]
