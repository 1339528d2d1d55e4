"""Unloading adapters at run time: does ``POST /v1/unload_lora_adapter`` give their memory back?

One server (uvicorn on 127.0.0.1, in this process, so its RSS is this process's), the base
model and no adapter at start. Then ``--rounds`` times: load ``--k`` random LoRA adapters
through ``POST /v1/load_lora_adapter``, ask each for a 1-token completion (every weight really
used), and unload them all through ``POST /v1/unload_lora_adapter``. RSS is read after each
step twice: as it is (``gc.collect()`` only), and after glibc's ``malloc_trim(0)`` hands freed
heap pages back to the OS.

The baseline is the memory the adapters take while loaded: unloading should give back
about that much, and rounds should not ratchet memory up (a leak would).

    python benchmarks/adapter_unload.py [--model smollm2-135m-instruct] [--k 4] [--rank 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

MB = 1024 * 1024
TOKEN = "benchmark-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rss() -> dict[str, float]:
    """RSS as it is, and after handing freed heap pages back to the OS."""
    import psutil

    gc.collect()
    plain = psutil.Process().memory_info().rss / MB
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    trimmed = psutil.Process().memory_info().rss / MB
    return {"rss_mb": round(plain, 1), "rss_trimmed_mb": round(trimmed, 1)}


def serve(app: Any) -> tuple[str, Any, threading.Thread, socket.socket]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread, sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import httpx
    import torch

    from dialogtune.models import load_model
    from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
    from dialogtune.serving.demo_adapters import make_random_adapter

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="dialogtune-bench-") as tmp:
        # r=16 on attention + MLP (the Llama-family default targets), random non-zero B.
        dirs = [
            str(make_random_adapter(args.model, Path(tmp) / f"a{i}", seed=i + 1, r=args.rank, scale=0.02))
            for i in range(args.k)
        ]
        adapter_mb = sum(os.path.getsize(Path(d) / "adapter_model.safetensors") for d in dirs) / args.k / MB
        registry = AdapterRegistry(load_model(args.model, dtype="fp32"))
        app = create_app(registry, ServingConfig(api_token=TOKEN))
        url, server, thread, sock = serve(app)
        steps: list[dict[str, Any]] = []

        def record(step: str, round_: int) -> None:
            steps.append({"round": round_, "step": step, **rss()})
            print(f"round {round_} {step:>9s}: {steps[-1]}", flush=True)

        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=600) as client:
                body = {"prompt": "Hello", "max_tokens": 1, "temperature": 0}
                client.post("/v1/completions", json={**body, "model": args.model}).raise_for_status()
                record("base", 0)
                for round_ in range(1, args.rounds + 1):
                    for i, path in enumerate(dirs):
                        client.post(
                            "/v1/load_lora_adapter", json={"lora_name": f"a{i}", "lora_path": path}
                        ).raise_for_status()
                        client.post("/v1/completions", json={**body, "model": f"a{i}"}).raise_for_status()
                    record("loaded", round_)
                    for i in range(len(dirs)):
                        client.post("/v1/unload_lora_adapter", json={"lora_name": f"a{i}"}).raise_for_status()
                    record("unloaded", round_)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()

    base = steps[0]
    first_loaded = next(s for s in steps if s["step"] == "loaded")
    first_unloaded = next(s for s in steps if s["step"] == "unloaded")
    last_unloaded = steps[-1]
    summary: dict[str, Any] = {"adapter_safetensors_mb": round(adapter_mb, 1)}
    for key in ("rss_mb", "rss_trimmed_mb"):
        added = first_loaded[key] - base[key]
        freed = first_loaded[key] - first_unloaded[key]
        summary[key] = {
            "added_by_k_adapters_mb": round(added, 1),
            "added_per_adapter_mb": round(added / args.k, 1),
            "freed_by_unloading_mb": round(freed, 1),
            "freed_over_added": round(freed / added, 2) if added > 0 else None,
            "above_base_after_last_round_mb": round(last_unloaded[key] - base[key], 1),
        }
    result = {
        "benchmark": "adapter_unload",
        "model": args.model,
        "k": args.k,
        "rank": args.rank,
        "rounds": args.rounds,
        "steps": steps,
        "summary": summary,
        "load_average": list(os.getloadavg()),
    }
    path = save("adapter_unload", result)
    print(f"wrote {path}")
    for key, label in (("rss_mb", "as is"), ("rss_trimmed_mb", "after malloc_trim")):
        s = summary[key]
        print(
            f"RSS {label}: {args.k} adapters add {s['added_by_k_adapters_mb']} MB "
            f"({s['added_per_adapter_mb']} MB each, file {summary['adapter_safetensors_mb']} MB); unloading frees "
            f"{s['freed_by_unloading_mb']} MB ({s['freed_over_added']}x); after {args.rounds} rounds "
            f"{s['above_base_after_last_round_mb']} MB above the base"
        )


if __name__ == "__main__":
    main()
