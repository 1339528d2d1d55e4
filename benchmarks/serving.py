"""Serving: (a) memory of one base + k LoRA adapters vs k merged models; (b) micro-batching vs sequential.

(a) Each configuration runs in a fresh subprocess, which loads the model(s), runs one
    1-token generation per model/adapter (so every weight is really in memory) and
    reports its resident set size. k = 0 is the bare base model.
(b) One registry (base + the adapters) served by uvicorn on 127.0.0.1, twice: with
    micro-batching (max batch 16) and strictly sequential (max batch 1). 16 concurrent
    requests, one real DialogSum validation dialogue each, adapters round-robin
    (base, a0, a1, ...), greedy, the same max_new_tokens. Writes
    ``benchmarks/results/serving.json``.

    python benchmarks/serving.py [--model smollm2-135m-instruct] [--ks 1 2 4] [--rank 16]
        [--requests 16] [--max-new-tokens 48] [--max-wait-ms 50] [--threads 2 1]
        [--part all|memory|throughput]

CPU timings depend on what else runs on the machine: each part records the load
average around it. ``--threads 2 1`` measures throughput with both torch thread counts.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
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
from _common import RESULTS, read_split, save  # noqa: E402

MB = 1024 * 1024
RESULT = RESULTS / "serving.json"


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

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
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


def measure_throughput(
    registry, n_requests: int, max_new_tokens: int, threads: int, max_wait_ms: float
) -> dict[str, Any]:
    import torch

    from dialogtune.serving import ServingConfig, create_app

    torch.set_num_threads(threads)
    names = [None, *registry.infos]
    dialogues = [row["dialogue"] for row in read_split("validation", n_requests)]
    payloads = [{"dialogue": d, "adapter": names[i % len(names)]} for i, d in enumerate(dialogues)]
    runs: dict[str, Any] = {}
    for label, max_batch in (("sequential", 1), ("batched", 16)):
        app = create_app(
            registry,
            ServingConfig(
                max_batch_size=max_batch,
                default_max_new_tokens=max_new_tokens,
                max_wait_ms=max_wait_ms,
                max_queued_dialogues=1024,
            ),
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server, thread = _serve(app, sock)
        seconds, bodies, latencies = asyncio.run(_fire(f"http://127.0.0.1:{sock.getsockname()[1]}", payloads))
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
        stats = app.state.service.batcher.stats
        runs[label] = {
            "max_batch_size": max_batch,
            "seconds": round(seconds, 2),
            "requests_per_s": round(n_requests / seconds, 3),
            "latency_s": {"mean": round(sum(latencies) / len(latencies), 2), "max": round(max(latencies), 2)},
            "generate_calls": stats.batches - 1,
            "largest_batch": stats.largest_batch,  # minus warm-up
            "summaries": [b["summary"] for b in bodies],
        }
        print(
            f"throughput {threads} thread(s) {label:10s}: {seconds:.1f} s for {n_requests} requests "
            f"({runs[label]['requests_per_s']:.2f} req/s, {stats.batches - 1} generate calls)",
            flush=True,
        )
    same = sum(a == b for a, b in zip(runs["batched"]["summaries"], runs["sequential"]["summaries"]))
    for run in runs.values():
        run["example_summaries"] = run.pop("summaries")[:3]
    return {
        "torch_threads": threads,
        "requests": n_requests,
        "max_new_tokens": max_new_tokens,
        "max_wait_ms": max_wait_ms,
        "adapters_round_robin": names,
        **runs,
        "speedup": round(runs["sequential"]["seconds"] / runs["batched"]["seconds"], 2),
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
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=50.0,
        help="batching window; 50 ms catches a burst of requests on a slow CPU (default: 50)",
    )
    parser.add_argument(
        "--part",
        choices=["all", "memory", "throughput"],
        default="all",
        help="run one part only; the other keeps its numbers from the previous results file",
    )
    parser.add_argument("--child-memory", choices=["adapters", "merged"], help=argparse.SUPPRESS)
    parser.add_argument("adapter_dirs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.model, args.adapter_dirs)))
        return

    from dialogtune.serving.demo_adapters import make_random_adapter

    previous = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    result: dict[str, Any] = {"benchmark": "serving", "model": args.model}
    with tempfile.TemporaryDirectory(prefix="dialogtune-bench-") as tmp:
        # r=16 on attention + MLP (the Llama-family default targets), random non-zero B.
        dirs = [
            str(make_random_adapter(args.model, Path(tmp) / f"a{i}", seed=i + 1, r=args.rank, scale=0.02))
            for i in range(max(args.ks))
        ]
        if args.part in ("all", "memory"):
            result["memory"] = timed(
                lambda: summarize_memory(measure_memory(args.model, dirs, args.ks), dirs, args.rank, args.ks)
            )
        if args.part in ("all", "throughput"):
            result["throughput"] = timed(lambda: run_throughput(args, dirs))
    for part in ("memory", "throughput"):  # a partial run keeps the other part's earlier numbers
        if part not in result and part in previous:
            result[part] = {**previous[part], "note": "from an earlier run"}
    memory, throughput = result.get("memory"), result.get("throughput")
    result["targets"] = {
        "memory_grows_about_adapter_size": memory
        and 0.5 <= memory["rss_growth_per_adapter_over_adapter_size"] <= 2,
        "throughput_at_least_2x": throughput
        and {str(t["torch_threads"]): t["speedup"] >= 2.0 for t in throughput["runs"]},
    }
    path = save("serving", result)
    if memory:
        print(
            f"adapter {memory['adapter']['safetensors_mb']:.1f} MB; RSS +{memory['rss_growth_per_adapter_mb']} MB "
            f"per adapter vs +{memory['rss_growth_per_merged_model_mb']} MB per merged model"
        )
    if throughput:
        print(
            "batching vs sequential: "
            + ", ".join(
                f"{t['speedup']:.2f}x with {t['torch_threads']} thread(s)" for t in throughput["runs"]
            )
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


def run_throughput(args: argparse.Namespace, dirs: list[str]) -> dict[str, Any]:
    import torch

    from dialogtune.models import load_model
    from dialogtune.serving import AdapterRegistry

    registry = AdapterRegistry(load_model(args.model))  # one server: the base + every adapter
    for i, path in enumerate(dirs):
        registry.load(f"a{i}", path)
    runs = [
        measure_throughput(registry, args.requests, args.max_new_tokens, threads, args.max_wait_ms)
        for threads in args.threads or [torch.get_num_threads()]
    ]
    return {"runs": runs}


if __name__ == "__main__":
    main()
