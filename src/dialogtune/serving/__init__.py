"""Serving: one base model with many LoRA adapters behind a micro-batching HTTP API.

``registry`` (adapters over one PeftModel, their checks and the model self-check),
``batcher`` (micro-batches on one model thread), ``app`` (FastAPI: ``create_app``),
``schemas`` (bounded request/response bodies), ``config`` (limits and auth),
``middleware`` (request logs, shutdown 503, connection bound, auth before the body,
body size and time limits), ``strict_json`` (strict JSON bodies, error responses that
always render).
"""

from __future__ import annotations

from typing import Any

from dialogtune.serving.config import TOKEN_ENV, ServingConfig

__all__ = ["TOKEN_ENV", "AdapterRegistry", "ServingConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # The app and the registry import torch and FastAPI: loaded on first use, so that the
    # config (and `dialogtune serve --help`) stays light.
    if name == "create_app":
        from dialogtune.serving.app import create_app

        return create_app
    if name == "AdapterRegistry":
        from dialogtune.serving.registry import AdapterRegistry

        return AdapterRegistry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
