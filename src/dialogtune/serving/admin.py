"""Loading and unloading adapters at run time, for every admin route.

``POST /v1/admin/adapters`` (dialogtune's) and vLLM's ``POST /v1/load_lora_adapter`` /
``POST /v1/unload_lora_adapter`` share these checks; each route only shapes its answer.
Errors are ``HTTPException`` with the status and message the routes document.

Unloading is safe while the server runs: an adapter that any request in progress uses
(queued, decoding, or a client gone whose rows are still being retired) is refused with 409,
and the name is withdrawn from the registry before the model thread deletes the weights, so
no new request can pick it in between.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from dialogtune.errors import ModelSpecError
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.registry import files_outside
from dialogtune.serving.schemas import AdapterInfo

log = logging.getLogger(__name__)


def _check_capacity(service: Any) -> None:
    registry, config = service.registry, service.config
    if len(registry.infos) >= config.max_adapters:
        raise HTTPException(
            409, f"{len(registry.infos)} adapters are loaded, this server's max_adapters; none can be added"
        )


async def load_adapter(service: Any, name: str, path: str) -> AdapterInfo:
    """Check and load adapter ``path`` as ``name`` on the model thread (``service``: SummarizeService)."""
    registry, config = service.registry, service.config
    if name in registry:
        raise HTTPException(409, f"an adapter named '{name}' is already loaded")
    if name == registry.model_name:
        raise HTTPException(409, f"'{name}' is the base model's name; choose another name for the adapter")
    _check_capacity(service)
    if config.adapter_root is not None:
        outside = files_outside(Path(path), config.adapter_root)
        if outside is not None:
            raise HTTPException(
                403, f"adapters can only be loaded from under {config.adapter_root}: {outside}"
            )

    def load() -> AdapterInfo:  # on the model thread, so two loads cannot both pass the cap
        _check_capacity(service)
        return registry.load(name, path)

    try:
        info = await service.batcher.run_exclusive(load)
    except ModelSpecError as exc:
        raise HTTPException(409 if name in registry else 400, str(exc)) from exc
    except HTTPException:
        raise
    except Exception as exc:  # a corrupt safetensors file, unreadable folder, ...: the caller's to fix
        log.warning("loading adapter '%s' from %s failed", name, path, exc_info=True)
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise HTTPException(400, f"cannot load adapter from {path}: {first_line}") from exc
    log.info("loaded adapter '%s' from %s", info.name, info.path)
    return info


class _Busy(Exception):
    pass


async def unload_adapter(service: Any, name: str) -> None:
    """Unload adapter ``name`` and free its weights, unless a request in progress uses it."""
    registry, batcher = service.registry, service.batcher
    if registry.merged is not None:
        raise HTTPException(
            409, f"this server serves adapter '{registry.merged}' merged into its base; it cannot be unloaded"
        )
    if name not in registry:
        raise HTTPException(404, f"no adapter named '{name}' is loaded")
    users = service.adapter_users[name]
    if users:
        raise HTTPException(
            409, f"{users} request(s) in progress use adapter '{name}'; unload it once they have finished"
        )
    info = registry.withdraw(name)  # from now on, requests naming it get 404

    def unload() -> None:  # on the model thread, between two decode steps
        # Rows of clients that have left may still be decoding until their next step.
        if isinstance(batcher, ContinuousBatcher) and batcher.uses_adapter(name):
            raise _Busy
        registry.unload(name)

    try:
        await batcher.run_exclusive(unload)
    except _Busy:
        registry.restore(info)
        raise HTTPException(
            409, f"requests still use adapter '{name}'; retry in a moment", headers={"Retry-After": "1"}
        ) from None
    except Exception as exc:
        if name not in getattr(registry.loaded.model, "peft_config", {}):  # gone after all
            log.warning("unloading adapter '%s' finished with an error", name, exc_info=True)
        else:
            registry.restore(info)
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise HTTPException(500, f"unloading adapter '{name}' failed: {first_line}") from exc
    log.info("unloaded adapter '%s'", name)
