"""Serving: one base model with many LoRA adapters behind a micro-batching HTTP API.

``registry`` (adapters over one PeftModel), ``batcher`` (micro-batches on one model
thread), ``app`` (FastAPI: ``create_app``), ``schemas`` (bounded request/response
bodies), ``config`` (limits and auth), ``middleware`` (request logs, body limit).
"""

from __future__ import annotations

from dialogtune.serving.app import create_app
from dialogtune.serving.config import TOKEN_ENV, ServingConfig
from dialogtune.serving.registry import AdapterRegistry

__all__ = ["TOKEN_ENV", "AdapterRegistry", "ServingConfig", "create_app"]
