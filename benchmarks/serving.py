"""Serving: (a) memory of one base + k LoRA adapters vs k merged models; (b) today's server vs
the shipped one: throughput, and latency under 1, 4 and 16 concurrent clients.

(a) Each configuration runs in a fresh subprocess, which loads the model(s), runs one
    1-token generation per model/adapter (so every weight is really in memory) and
    reports its resident set size. k = 0 is the bare base model.
(b) Two servers, each in a fresh subprocess on 127.0.0.1 serving on its main thread as
    ``dialogtune serve`` does (uvicorn, the options it passes), base + max(ks) adapters; the
    clients run in this process, so they take no CPU time from the server's process:

    - ``shipped``: ``ServingConfig()``'s defaults: continuous batching (requests join the
      running batch between decode steps, 16 slots), precision auto (bf16 on this CPU), the
      model loaded on one thread and the threads given to the model thread
      (``dialogtune.serving.threads``);
    - ``today``: the server before continuous batching: fp32 weights, static micro-batches
      through transformers' ``generate`` (``batching: micro``, max batch 16, 10 ms window).

    Each server answers (1) a burst of ``--requests`` concurrent requests (one real DialogSum
    validation dialogue each, adapters round-robin: base, a0, a1, ...), for throughput; then
    (2) closed-loop clients: 1, 4 and 16 clients each sending requests one after another,
    for latency percentiles (p50/p95; 1 client = single-request latency). Every request
    carries a dialogue of its own (a server drafting from its recent answers must not be timed
    on one it answered before). Greedy,
    ``--max-new-tokens`` per request. Memory of each server: RSS once loaded, and the peak
    while serving (sampled every 20 ms from this process).

Both parts run in every invocation, so every number in ``benchmarks/results/serving.json``
comes from the same run.

    python benchmarks/serving.py [--model smollm2-135m-instruct] [--ks 1 2 4] [--rank 16]
        [--requests 16] [--max-new-tokens 64] [--threads 1]

CPU timings depend on what else runs on the machine: each part records the load average
around it; ``--threads 1`` (the default) keeps timings stable on a shared CPU; ``--threads 1 2``
also measures both servers on two cores (a server's default on this machine).
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
    from dialogtune.models.inference import load_for_adapters, load_for_inference
    from dialogtune.prompts import PromptTemplate
    from dialogtune.serving import AdapterRegistry

    before = _rss()  # libraries imported, no model yet
    start = time.perf_counter()
    one_token = GenerationSettings(max_new_tokens=1)
    held: list[Any] = []
    if mode == "adapters":
        registry = AdapterRegistry(load_for_adapters(model))  # what `dialogtune serve --adapter ...` loads
        for i, path in enumerate(adapter_dirs):
            registry.load(f"a{i}", path)
        names = [None, *registry.infos]
        registry.generate(
            ["#Person1#: Hi.\n#Person2#: Hello."] * len(names), names, one_token, PromptTemplate()
        )
        held.append(registry)
    else:  # k independent models, each with its adapter merged in (what serving without LoRA sharing needs)
        for path in adapter_dirs:
            loaded = load_for_inference(model, adapter=path, merge="yes")  # `serve --merged`
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


async def _fire(
    base_url: str, payloads: list[dict[str, Any]]
) -> tuple[float, list[dict[str, Any]], list[float]]:
    """All ``payloads`` at once: (wall seconds, bodies, per-request latencies)."""
    import httpx

    async with httpx.AsyncClient(
        base_url=base_url, timeout=1800, limits=httpx.Limits(max_connections=64)
    ) as client:

        async def one(payload):
            start = time.perf_counter()
            response = await client.post("/v1/summarize", json=payload)
            response.raise_for_status()
            return response.json(), time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in payloads))
        return time.perf_counter() - start, [r[0] for r in results], [r[1] for r in results]


async def _closed_loop(base_url: str, clients: int, per_client: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """``clients`` clients, each sending its requests one after another: latency percentiles."""
    import httpx

    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=base_url, timeout=1800, limits=httpx.Limits(max_connections=64)
    ) as client:

        async def run(payloads):
            for payload in payloads:
                start = time.perf_counter()
                response = await client.post("/v1/summarize", json=payload)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(run(p) for p in per_client[:clients]))
        seconds = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(latencies) / seconds, 3),
        "latency_s": {
            "p50": round(_percentile(ordered, 50), 2),
            "p95": round(_percentile(ordered, 95), 2),
            "max": round(ordered[-1], 2),
        },
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class PeakRSS:
    """Samples a process's RSS (default: this one) every 20 ms while running (the peak of a serving run)."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._process = psutil.Process(pid)
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


CLIENTS = (1, 4, 16)


def child_server(mode: str, model: str, adapter_dirs: list[str], threads: int) -> None:
    """Runs in a fresh process, as `dialogtune serve` does: one server (base + adapters) on the
    main thread until terminated. Prints one JSON line first: its port, format and memory."""
    import torch
    import uvicorn

    from dialogtune.models import load_model
    from dialogtune.models.inference import load_for_adapters
    from dialogtune.serving import AdapterRegistry, ServingConfig, create_app

    if mode == "shipped":  # as `dialogtune serve` does: load on one thread, compute on the model thread
        from dialogtune.serving.threads import hold_for_model_thread

        hold_for_model_thread(threads)
    else:  # today's server: every thread set here, also for loading (its model thread was throttled)
        torch.set_num_threads(threads)
    # The shipped defaults (what `dialogtune serve --adapter ...` loads: bf16 weights in the CPU
    # kernel's layout, fp32 top logits); today's server: fp32 weights, static micro-batches.
    base = load_for_adapters(model) if mode == "shipped" else load_model(model, dtype="fp32")
    registry = AdapterRegistry(base)
    for i, path in enumerate(adapter_dirs):
        registry.load(f"a{i}", path)
    loaded_rss = _rss()["rss_mb"]
    config = ServingConfig() if mode == "shipped" else dataclasses.replace(ServingConfig(), batching="micro")
    app = create_app(registry, config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    info = {
        "port": sock.getsockname()[1],
        "precision": registry.loaded.precision,
        "batching": type(app.state.service.batcher).__name__,
        "max_batch_size": config.max_batch_size,
        "loaded_rss": loaded_rss,
        "adapters_round_robin": [None, *registry.infos],
    }
    print(json.dumps(info), flush=True)
    # The options `dialogtune serve` passes (connection limit), so the server is the shipped one.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, **config.uvicorn_options())
    )
    server.run(sockets=[sock])


def drive(
    mode: str, model: str, adapter_dirs: list[str], n_requests: int, max_new_tokens: int, threads: int
) -> dict[str, Any]:
    """Start one server process (:func:`child_server`) and measure it from this one, as its
    clients would: a burst, closed-loop clients, and the server's memory."""
    cmd = [
        sys.executable, __file__, "--child-server", mode, "--model", model, "--threads", str(threads),
        "--",  # the adapter folders; --threads takes several numbers
        *adapter_dirs,
    ]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line:
            raise SystemExit(f"the {mode} server did not start (exit {server.wait()})")
        info = json.loads(line)
        base_url = f"http://127.0.0.1:{info['port']}"
        names = info["adapters_round_robin"]
        # Closed loop: 8 requests for one client, 8 for 4 clients (2 each), 32 for 16 (2 each).
        per_client = {c: max(2, 8 // c) for c in CLIENTS}
        # Every request its own dialogue: a server that drafts from its recent answers
        # (serving.draft_memory) must not be timed on a dialogue it has answered before.
        rows = read_split("validation", n_requests + sum(c * k for c, k in per_client.items()) + 1)
        used = iter(range(len(rows) - 1))

        def payload() -> dict[str, Any]:
            i = next(used)
            return {
                "dialogue": rows[i]["dialogue"],
                "adapter": names[i % len(names)],
                "options": {"max_new_tokens": max_new_tokens},
            }

        burst = [payload() for _ in range(n_requests)]
        loops = {c: [[payload() for _ in range(per_client[c])] for _ in range(c)] for c in CLIENTS}
        warm = {"dialogue": rows[-1]["dialogue"], "options": {"max_new_tokens": 4}}
        asyncio.run(_fire(base_url, [warm, warm]))  # one-time kernel set-up is not the server's latency
        with PeakRSS(server.pid) as peak:
            seconds, bodies, latencies = asyncio.run(_fire(base_url, burst))
            latency = [asyncio.run(_closed_loop(base_url, c, loops[c])) for c in CLIENTS]
    finally:
        server.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "precision": info["precision"],
        "batching": info["batching"],
        "max_batch_size": info["max_batch_size"],
        "burst": {
            "requests": n_requests,
            "seconds": round(seconds, 2),
            "requests_per_s": round(n_requests / seconds, 3),
            "generated_tokens_per_s": round(n_requests * max_new_tokens / seconds, 1),
            "latency_s": {
                "p50": round(_percentile(ordered, 50), 2),
                "p95": round(_percentile(ordered, 95), 2),
            },
        },
        "closed_loop": latency,
        "rss_mb": {"loaded": info["loaded_rss"], "peak_serving": round(peak.peak / MB, 1)},
        "adapters_round_robin": names,
        "summaries": [b["summary"] for b in bodies],
    }


def measure_throughput(
    model: str, dirs: list[str], n_requests: int, max_new_tokens: int, threads: int
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for mode in ("today", "shipped"):
        run = drive(mode, model, dirs, n_requests, max_new_tokens, threads)
        single = run["closed_loop"][0]["latency_s"]["p50"]
        print(
            f"{mode:8s} ({run['precision']}, {run['batching']}): burst of {n_requests} in {run['burst']['seconds']:.1f} s; "
            f"single-request latency {single:.2f} s; "
            + ", ".join(
                f"{c['clients']} clients p50 {c['latency_s']['p50']:.2f} / p95 {c['latency_s']['p95']:.2f} s"
                for c in run["closed_loop"]
            )
            + f"; RSS {run['rss_mb']['loaded']:.0f} MB loaded, {run['rss_mb']['peak_serving']:.0f} MB peak",
            flush=True,
        )
        runs[mode] = run
    names = runs["shipped"]["adapters_round_robin"]
    for run in runs.values():
        run.pop("mode")
        run.pop("adapters_round_robin")
        run["example_summaries"] = run.pop("summaries")[:3]
    today, shipped = runs["today"], runs["shipped"]
    return {
        "torch_threads": threads,
        "max_new_tokens": max_new_tokens,
        "adapters_round_robin": names,
        **runs,
        "ratios": {
            "burst_throughput_shipped_over_today": round(
                today["burst"]["seconds"] / shipped["burst"]["seconds"], 2
            ),
            **{
                f"p50_latency_today_over_shipped_{c['clients']}_clients": round(
                    c["latency_s"]["p50"] / s["latency_s"]["p50"], 2
                )
                for c, s in zip(today["closed_loop"], shipped["closed_loop"])
            },
            "peak_rss_shipped_over_today": round(
                shipped["rss_mb"]["peak_serving"] / today["rss_mb"]["peak_serving"], 2
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch thread counts to measure throughput with (default: 1, stable on a shared CPU)",
    )
    parser.add_argument("--child-memory", choices=["adapters", "merged"], help=argparse.SUPPRESS)
    parser.add_argument("--child-server", choices=["today", "shipped"], help=argparse.SUPPRESS)
    parser.add_argument("adapter_dirs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.model, args.adapter_dirs)))
        return
    if args.child_server:
        child_server(args.child_server, args.model, args.adapter_dirs, args.threads[0])
        return

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
        threads = args.threads
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
        "single_request_latency_3x_lower": {
            str(t["torch_threads"]): t["ratios"]["p50_latency_today_over_shipped_1_clients"] >= 3
            for t in throughput["runs"]
        },
    }
    path = save("serving", result)
    print(
        f"adapter {memory['adapter']['safetensors_mb']:.1f} MB; RSS +{memory['rss_growth_per_adapter_mb']} MB "
        f"per adapter vs +{memory['rss_growth_per_merged_model_mb']} MB per merged model"
    )
    for t in throughput["runs"]:
        print(f"shipped vs today, {t['torch_threads']} thread(s): " + json.dumps(t["ratios"]))
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
