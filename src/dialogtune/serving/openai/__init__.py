"""OpenAI-compatible routes on ``dialogtune serve``, so that OpenAI and vLLM clients work unchanged.

``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streamed as
server-sent events on request), and vLLM's adapter admin routes ``POST /v1/load_lora_adapter``
/ ``POST /v1/unload_lora_adapter``. ``model`` names an adapter or the base model. See
docs/serving.md.

``decode`` (body → :class:`~dialogtune.serving.openai.decode.Plan`: adapter, settings, prompt
token ids, limits), ``respond`` (run it on the server's batcher; answer whole or streamed),
``text`` (tokens → text as it becomes final: whole characters, stop strings), ``errors``
(OpenAI's error shape on these routes only), ``schemas`` (the bodies), ``routes`` (wiring).
"""

from __future__ import annotations

from dialogtune.serving.openai.routes import install_openai_routes

__all__ = ["install_openai_routes"]
