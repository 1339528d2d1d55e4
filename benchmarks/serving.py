"""Serving: (a) memory of one base + k LoRA adapters vs k merged models; (b) micro-batching vs sequential.

(a) Each configuration runs in a fresh subprocess, which loads the model(s), runs one
    1-token generation per model/adapter (so every weight is really in memory) and
    reports its resident set size. k = 0 is the bare base model.
(b) The server as shipped: the base + max(ks) adapters, served by uvicorn on 127.0.0.1
    with ``ServingConfig()``'s defaults (micro-batching, max batch 16, the 10 ms batch
    window), against the naive baseline, the same server strictly sequential
    (``max_batch_size=1``). 16 concurrent requests, one real DialogSum validation
    dialogue each, adapters round-robin (base, a0, a1, ...), greedy, ``max_new_tokens``
    set by the request. Each mode runs in a fresh subprocess that also measures its own
    memory: RSS once loaded, and its peak while serving (sampled every 20 ms).

Both parts run in every invocation, so every number in ``benchmarks/results/serving.json``
comes from the same run.

    python benchmarks/serving.py [--model smollm2-135m-instruct] [--ks 1 2 4] [--rank 16]
        [--requests 16] [--max-new-tokens 48] [--threads 1 2]

CPU timings depend on what else runs on the machine: each part records the load
average around it. ``--threads 1 2`` measures throughput with both torch thread counts.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_split, save  # noqa: E402

MB = 1024 * 1024


def _rss() -> dict[str, float]:
    import psutil

    gc.collect()
    try:  # hand freed heap pages back to the OS, so RSS shows what is really held
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    # RSS, not USS: the weights file's page-cache pages count as this process's memory
    # even when another process maps the same cached model.
    return {"rss_mb": round(psutil.Process().memory_info().rss / MB, 1)}


def child_memory(mode: str, model: str, adapter_dirs: list[str]) -> dict[str, Any]:
    """Runs in a fresh process: hold the configuration, report memory."""
    from dialogtune.generation import GenerationSettings, generate
    from dialogtune.models import load_model
    from dialogtune.models.adapters import merge_adapter
    from dialogtune.prompts import PromptTemplate
    from dialogtune.serving import AdapterRegistry

    before = _rss()  # libraries imported, no model yet
    start = time.perf_counter()
    one_token = GenerationSettings(max_new_tokens=1)
    held: list[Any] = []
    if mode == "adapters":
        registry = AdapterRegistry(load_model(model))
        for i, path in enumerate(adapter_dirs):
            registry.load(f"a{i}", path)
        names = [None, *registry.infos]
        registry.generate(
            ["#Person1#: Hi.\n#Person2#: Hello."] * len(names), names, one_token, PromptTemplate()
        )
        held.append(registry)
    else:  # k independent models, each with its adapter merged in (what serving without LoRA sharing needs)
        for path in adapter_dirs:
            loaded = load_model(model, adapter=path)
            merge_adapter(loaded)
            generate(loaded, ["#Person1#: Hi.\n#Person2#: Hello."], one_token, progress=False)
            held.append(loaded)
    after = _rss()
    return {
        "mode": mode,
        "k": len(adapter_dirs),
        **after,
        "rss_mb_libraries": before["rss_mb"],
        "load_s": round(time.perf_counter() - start, 2),
    }


def measure_memory(model: str, dirs: list[str], ks: list[int]) -> list[dict[str, Any]]:
    rows = []
    configs = [("adapters", 0)] + [(mode, k) for k in ks for mode in ("adapters", "merged")]
    for mode, k in configs:
        cmd = [sys.executable, __file__, "--child-memory", mode, "--model", model, *dirs[:k]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"memory {mode:8s} k={k}: RSS {row['rss_mb']:.0f} MB", flush=True)
        rows.append(row)
    return rows


def _serve(app, sock: socket.socket):
    import uvicorn

    # The options `dialogtune serve` passes (connection limit), so the server is the shipped one.
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, **app.state.service.config.uvicorn_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("server did not start")
        time.sleep(0.02)
    return server, thread


async def _fire(
    base_url: str, payloads: list[dict[str, Any]]
) -> tuple[float, list[dict[str, Any]], list[float]]:
    import httpx

    async with httpx.AsyncClient(
        base_url=base_url, timeout=900, limits=httpx.Limits(max_connections=64)
    ) as client:
        await client.post(
            "/v1/summarize",
            json={"dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "options": {"max_new_tokens": 2}},
        )  # warm-up

        async def one(payload):
            start = time.perf_counter()
            response = await client.post("/v1/summarize", json=payload)
            response.raise_for_status()
            return response.json(), time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in payloads))
        return time.perf_counter() - start, [r[0] for r in results], [r[1] for r in results]


class PeakRSS:
    """Samples this process's RSS every 20 ms while running (the peak of a serving run)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child_throughput(
    mode: str, model: str, adapter_dirs: list[str], n_requests: int, max_new_tokens: int, threads: int
) -> dict[str, Any]:
    """Runs in a fresh process: one server (base + adapters), one burst of requests, its memory."""
    import torch

    from dialogtune.models import load_model
    from dialogtune.serving import AdapterRegistry, ServingConfig, create_app

    torch.set_num_threads(threads)
    registry = AdapterRegistry(load_model(model))
    for i, path in enumerate(adapter_dirs):
        registry.load(f"a{i}", path)
    loaded_rss = _rss()["rss_mb"]
    # The shipped defaults; the baseline differs in one setting only.
    config = ServingConfig() if mode == "batched" else dataclasses.replace(ServingConfig(), max_batch_size=1)
    names = [None, *registry.infos]
    dialogues = [row["dialogue"] for row in read_split("validation", n_requests)]
    payloads = [
        {"dialogue": d, "adapter": names[i % len(names)], "options": {"max_new_tokens": max_new_tokens}}
        for i, d in enumerate(dialogues)
    ]
    app = create_app(registry, config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server, thread = _serve(app, sock)
    with PeakRSS() as peak:
        seconds, bodies, latencies = asyncio.run(_fire(f"http://127.0.0.1:{sock.getsockname()[1]}", payloads))
    server.should_exit = True
    thread.join(timeout=60)
    sock.close()
    stats = app.state.service.batcher.stats
    return {
        "mode": mode,
        "max_batch_size": config.max_batch_size,
        "max_wait_ms": config.max_wait_ms,
        "seconds": round(seconds, 2),
        "requests_per_s": round(n_requests / seconds, 3),
        "latency_s": {"mean": round(sum(latencies) / len(latencies), 2), "max": round(max(latencies), 2)},
        "generate_calls": stats.batches - 1,  # minus the warm-up
        "batch_sizes": stats.batch_sizes[1:],
        "rss_mb": {"loaded": loaded_rss, "peak_serving": round(peak.peak / MB, 1)},
        "adapters_round_robin": names,
        "summaries": [b["summary"] for b in bodies],
    }


def measure_throughput(
    model: str, dirs: list[str], n_requests: int, max_new_tokens: int, threads: int
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for mode in ("sequential", "batched"):
        cmd = [
            sys.executable,
            __file__,
            "--child-throughput",
            mode,
            "--model",
            model,
            "--requests",
            str(n_requests),
            "--max-new-tokens",
            str(max_new_tokens),
            "--threads",
            str(threads),
            "--",  # the adapter folders; --threads takes several numbers
            *dirs,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"throughput {threads} thread(s) {mode:10s}: {run['seconds']:.1f} s for {n_requests} requests "
            f"({run['requests_per_s']:.2f} req/s, batches {run['batch_sizes']}), "
            f"RSS {run['rss_mb']['loaded']:.0f} MB loaded, {run['rss_mb']['peak_serving']:.0f} MB peak",
            flush=True,
        )
        runs[mode] = run
    same = sum(a == b for a, b in zip(runs["batched"]["summaries"], runs["sequential"]["summaries"]))
    names = runs["batched"]["adapters_round_robin"]
    for run in runs.values():
        run.pop("mode")
        run.pop("adapters_round_robin")
        run["example_summaries"] = run.pop("summaries")[:3]
    return {
        "torch_threads": threads,
        "requests": n_requests,
        "max_new_tokens": max_new_tokens,
        "adapters_round_robin": names,
        **runs,
        "speedup": round(runs["sequential"]["seconds"] / runs["batched"]["seconds"], 2),
        "peak_rss_batched_over_sequential": round(
            runs["batched"]["rss_mb"]["peak_serving"] / runs["sequential"]["rss_mb"]["peak_serving"], 2
        ),
        "identical_outputs": f"{same}/{n_requests}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch thread counts to measure throughput with (default: torch's default)",
    )
    parser.add_argument("--child-memory", choices=["adapters", "merged"], help=argparse.SUPPRESS)
    parser.add_argument("--child-throughput", choices=["sequential", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("adapter_dirs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.model, args.adapter_dirs)))
        return
    if args.child_throughput:
        run = child_throughput(
            args.child_throughput,
            args.model,
            args.adapter_dirs,
            args.requests,
            args.max_new_tokens,
            args.threads[0],
        )
        print(json.dumps(run))
        return

    import torch

    from dialogtune.serving.demo_adapters import make_random_adapter

    result: dict[str, Any] = {"benchmark": "serving", "model": args.model}
    with tempfile.TemporaryDirectory(prefix="dialogtune-bench-") as tmp:
        # r=16 on attention + MLP (the Llama-family default targets), random non-zero B.
        dirs = [
            str(make_random_adapter(args.model, Path(tmp) / f"a{i}", seed=i + 1, r=args.rank, scale=0.02))
            for i in range(max(args.ks))
        ]
        result["memory"] = timed(
            lambda: summarize_memory(measure_memory(args.model, dirs, args.ks), dirs, args.rank, args.ks)
        )
        threads = args.threads or [torch.get_num_threads()]
        result["throughput"] = timed(
            lambda: {
                "runs": [
                    measure_throughput(args.model, dirs, args.requests, args.max_new_tokens, t)
                    for t in threads
                ]
            }
        )
    memory, throughput = result["memory"], result["throughput"]
    result["targets"] = {
        "memory_grows_about_adapter_size": 0.5 <= memory["rss_growth_per_adapter_over_adapter_size"] <= 2,
        "throughput_at_least_2x": {str(t["torch_threads"]): t["speedup"] >= 2.0 for t in throughput["runs"]},
    }
    path = save("serving", result)
    print(
        f"adapter {memory['adapter']['safetensors_mb']:.1f} MB; RSS +{memory['rss_growth_per_adapter_mb']} MB "
        f"per adapter vs +{memory['rss_growth_per_merged_model_mb']} MB per merged model"
    )
    print(
        "batching vs sequential: "
        + ", ".join(f"{t['speedup']:.2f}x with {t['torch_threads']} thread(s)" for t in throughput["runs"])
    )
    print(f"wrote {path}")


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one part; record its wall time and the machine's load (other processes skew CPU timings)."""
    load_before, start = os.getloadavg()[0], time.perf_counter()
    part = fn()
    return {
        **part,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def summarize_memory(rows: list[dict[str, Any]], dirs: list[str], rank: int, ks: list[int]) -> dict[str, Any]:
    adapter_mb = (Path(dirs[0]) / "adapter_model.safetensors").stat().st_size / MB
    targets = json.loads((Path(dirs[0]) / "adapter_config.json").read_text())["target_modules"]
    base = next(r for r in rows if r["k"] == 0)["rss_mb"]
    by = {(r["mode"], r["k"]): r["rss_mb"] for r in rows}
    k_max = max(ks)
    per_adapter = (by[("adapters", k_max)] - base) / k_max
    per_merged = (by[("merged", k_max)] - base) / (k_max - 1) if k_max > 1 else None
    return {
        "adapter": {
            "rank": rank,
            "alpha": rank,
            "target_modules": sorted(targets),
            "safetensors_mb": round(adapter_mb, 2),
        },
        "rows": rows,
        "base_model_rss_mb": base,
        "rss_growth_per_adapter_mb": round(per_adapter, 1),
        "rss_growth_per_adapter_over_adapter_size": round(per_adapter / adapter_mb, 2),
        "rss_growth_per_merged_model_mb": round(per_merged, 1) if per_merged else None,
        "merged_over_adapters_rss": {str(k): round(by[("merged", k)] / by[("adapters", k)], 2) for k in ks},
    }


if __name__ == "__main__":
    main()
