"""Where the summarizing runs: in this process, or on Ray Data actors.

Both engines take the pending shards and yield result tables (rows of
:data:`~dialogtune.batch.inputs.READ_SCHEMA` with ``summary`` instead of ``dialogue``);
the runner writes each shard as soon as all its rows are back.

Why dialogtune plans the shards and not ``ray.data.read_json``/``read_parquet``: Ray's
readers cut blocks by file size and cluster parallelism and give rows no stable index,
so a rerun could not tell which rows were already done. Here each shard is a fixed row
range (see ``inputs.py``); Ray gets one block per pending shard, a read step on the workers
turns it into rows, and :class:`Summarizer` actors (one model each, loaded once) take a
whole shard per call (``batch_size=None``): the same calls, in the same groups, as the
local engine, so the outputs match row for row. The read step has the actors' resources,
so Ray fuses it into them and it needs no CPU of its own. All pending shards run in one
Dataset, so the actor pool is built once per job, not once per shard.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dialogtune.batch.config import BatchConfig
from dialogtune.batch.inputs import Shard, read_shard
from dialogtune.batch.summarizer import Summarizer
from dialogtune.errors import DialogtuneError

_ERROR_LINE = re.compile(r"^dialogtune\.errors\.\w+: (.+)$", re.MULTILINE)
RAY_MISSING = (
    '--engine ray needs Ray, an optional extra: pip install -e ".[scale]" (or pip install "ray[data]")'
)


def local_results(pending: list[Shard], config: BatchConfig, timings: dict[str, float]) -> Iterator[pa.Table]:
    """One model in this process, one shard per call."""
    start = time.perf_counter()
    summarizer = Summarizer(config.job, threads=config.threads_per_worker)
    timings["engine_start_s"] = time.perf_counter() - start
    for shard in pending:
        yield summarizer(read_shard(shard, config.id_column, config.dialogue_column))


def read_shards(descriptors: pa.Table, id_column: str, dialogue_column: str) -> pa.Table:
    """Ray step: shard descriptors (one per block) → their rows."""
    tables = [read_shard(Shard(**row), id_column, dialogue_column) for row in descriptors.to_pylist()]
    return pa.concat_tables(tables)


def check_ray(config: BatchConfig) -> None:
    """Before any work: Ray is installed, and the cluster's address (if any) answers.

    ``ray.init`` retries an unreachable ``host:port`` for many minutes; a TCP connect
    tells in seconds.
    """
    try:
        import ray
    except ImportError:
        raise DialogtuneError(RAY_MISSING) from None
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized() or not address or "://" in address.removeprefix("ray://"):
        return  # a session of this process is used as is; other schemes are Ray's to judge
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local": Ray finds the cluster (or says it cannot) at once
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise DialogtuneError(
            f"cannot reach the Ray cluster at '{address}' ({exc.strerror or exc}); check --ray-address"
            + (" and $RAY_ADDRESS" if not config.ray_address else "")
        ) from None


def ray_results(pending: list[Shard], config: BatchConfig, timings: dict[str, float]) -> Iterator[pa.Table]:
    """Ray Data: read on the workers → ``map_batches(Summarizer)`` on an actor pool → back to the driver."""
    check_ray(config)
    import ray
    import ray.data

    threads = config.threads_per_worker or 1
    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, config, threads)
    timings["engine_start_s"] = time.perf_counter() - start
    try:
        # More actors than shards would only load models that get no work.
        workers = min(
            config.num_workers or _default_workers(ray, threads, config.gpus_per_worker), len(pending)
        )
        timings["workers"] = workers
        remote: dict[str, Any] = {"num_cpus": threads}
        if config.gpus_per_worker:
            remote["num_gpus"] = config.gpus_per_worker
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts rows of finished shards
        context.print_on_execution_start = False
        # Errors reach us as exceptions (and become one line when they are the user's);
        # Ray Data would also log each one with its full stack trace.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        ds = ray.data.from_items([s.to_dict() for s in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(
            read_shards,
            fn_kwargs={"id_column": config.id_column, "dialogue_column": config.dialogue_column},
            batch_size=1,
            batch_format="pyarrow",
            **remote,
        )
        ds = ds.map_batches(
            Summarizer,
            fn_constructor_kwargs={"job": _one_process(config.job), "threads": threads},
            compute=ray.data.ActorPoolStrategy(size=workers),
            # Ray requires a batch size with GPUs; a shard can then be split between two
            # calls (GPU numerics differ from the CPU's anyway).
            batch_size=config.shard_size if config.gpus_per_worker else None,
            batch_format="pyarrow",
            **remote,
        )
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is not None:  # e.g. a model that an actor could not load: one line, as locally
            raise DialogtuneError(str(user_error)) from exc
        raise
    finally:
        if started_here:
            ray.shutdown()


def _init_ray(ray: Any, config: BatchConfig, threads: int) -> None:
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    # Ray's own notices (token auth, execution plans) are not the user's business here;
    # errors still show, and the workers' logs stay in Ray's session folder.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:  # a running cluster (under `ray job submit`, RAY_ADDRESS is set for us)
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise DialogtuneError(f"cannot connect to the Ray cluster at '{address}' ({reason})") from None
        return
    # A local cluster on this machine: enough CPUs for the actors asked for, even if
    # that oversubscribes the cores (Ray would otherwise wait forever for the rest).
    cpus = os.cpu_count() or 1
    workers = config.num_workers or max(1, cpus // threads)
    ray.init(num_cpus=max(cpus, workers * threads), include_dashboard=False, **quiet)


def _one_process(job: Any) -> Any:
    """The job with engine processes off: Ray's actors are the processes here, and forking a
    Ray worker (its gRPC threads) is unsafe."""
    return dataclasses.replace(job, generation=dataclasses.replace(job.generation, processes=1))


def _default_workers(ray: Any, threads: int, gpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // threads))


def _user_error(exc: BaseException) -> DialogtuneError | None:
    """The dialogtune error an actor raised (a model it could not load, ...), from inside Ray's wrappers.

    A task's error arrives as ``cause`` of a ``RayTaskError``; an actor that died in
    ``__init__`` arrives as an ``ActorDiedError`` that keeps only the formatted traceback,
    whose line ``dialogtune.errors.<Class>: <message>`` holds the one-line message.
    """
    stack: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # Ray re-raises a task's error as a class deriving from both RayTaskError and the
        # original; only the original carries the one-line message.
        if isinstance(current, DialogtuneError) and type(current).__module__.startswith("dialogtune"):
            return current
        found = _ERROR_LINE.findall(str(current))
        if found:
            return DialogtuneError(found[-1])
        stack += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return None
