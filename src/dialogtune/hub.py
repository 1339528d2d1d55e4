"""Fail fast without a network: is the Hugging Face hub reachable at all?

Without a network, transformers and datasets retry the hub with back-off before they give up
(measured here: 24-30 s per hub id, for an error the user can fix in a second). One cheap
probe per process — resolve and connect to the hub's host, 3 s at most — tells us; when it
fails we switch huggingface_hub, transformers and datasets to offline mode, so a model or
dataset already in the local cache still loads and anything else fails at once.

Behind a proxy (``HTTPS_PROXY``/``ALL_PROXY`` set) a direct connection says nothing, so no
probe is made. ``HF_HUB_OFFLINE=1`` is respected as is.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import ParseResult, urlparse

_TRUE = ("1", "true", "yes", "on")
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _endpoint() -> ParseResult:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def hub_host() -> str:
    return _endpoint().hostname or "huggingface.co"


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """True unless offline mode is set or a direct connection to the hub's host fails."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return False
    if any(os.environ.get(name) for name in _PROXIES):
        return True
    endpoint = _endpoint()
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def go_offline_if_unreachable() -> bool:
    """Switch the hub libraries to offline (cache-only) mode when the hub cannot be reached.

    Returns True when offline. The libraries read these flags at call time.
    """
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    return True
