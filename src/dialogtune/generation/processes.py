"""Several engine processes on one CPU: each core decodes its own share of the dialogues.

A decode step of a small model is a few hundred short operations whose products are bound by
reading the weights; spread over two threads, each operation pays the threads' hand-off and the
step gains little (measured on SmolLM2-135M, 32 dialogues, bf16, two cores: 1.58x with two
threads, 1.87x with two processes of one thread each). So on a CPU the engine forks one process
per core after the model is loaded (the weights are shared, copy-on-write, not reloaded), hands
out the prompts longest-first as their slots free up, and collects the finished summaries as
they come.

The summaries are the same whatever the number of processes: the ragged engine's output does
not depend on the batch (:mod:`dialogtune.generation.ragged`), and a sampling request draws from
its own seeded generator. Only the ragged engine is split this way: transformers' static
batches (T5, BART, beam search) pad prompts together, and a different split would change them.

Forked children run one thread each: GNU OpenMP, which torch's CPU build uses, hangs in a forked
child that starts a parallel region after the parent has used its thread pool.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from dialogtune.errors import DialogtuneError
from dialogtune.generation import engine
from dialogtune.generation.settings import GenerationSettings

MAX_AUTO = 8  # processes "auto" starts at most: each holds its own key/value cache
Finished = Callable[[int, list[int], bool], None]  # index, tokens, stopped by the end-of-sequence token


class GenerationWorkerError(DialogtuneError):
    """A generation process failed or was killed (often: out of memory)."""


def can_fork() -> bool:
    return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


def resolve(settings: GenerationSettings, model: torch.nn.Module, prompts: int, cache_bytes: int) -> int:
    """How many processes to run: ``settings.processes``, or for 0 ("auto") one per thread torch
    may use when every one gets at least a full batch of prompts and their caches fit in half the
    free memory (else one process with all the threads); always 1 off a CPU, or where forking is
    unsafe (not Linux, not the main thread)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    if not on_cpu or not can_fork() or prompts < 2:
        return 1
    if settings.processes:
        return min(settings.processes, prompts)
    threads = torch.get_num_threads()
    fit = _free_memory() // (2 * cache_bytes) if cache_bytes > 0 else threads
    wanted = min(threads, MAX_AUTO, fit)
    if wanted < 2 or prompts // settings.batch_size < wanted:
        return 1  # too little work (or memory) for one process per thread: threads do better
    return wanted


def _free_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def run(
    make_engine: Callable[[], engine.RaggedEngine],
    requests: list[engine.Request],
    processes: int,
    finished: Finished,
) -> None:
    """Run ``requests`` over ``processes`` forked children; ``finished`` is called in this process
    as each request completes.

    The children take the requests in the order given (longest first), the next one whenever a
    slot of theirs is free, so none idles while another still has a queue (dealing them out in
    advance left one process up to 8% behind the other)."""
    context = multiprocessing.get_context("fork")
    taken = context.Value("q", 0)  # how many requests the children have taken, in order
    children: list[tuple[Any, Connection]] = []
    try:
        for _ in range(processes):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(make_engine, requests, taken, send), daemon=True)
            child.start()
            send.close()  # the child's end: EOF here once the child exits
            children.append((child, receive))
        _collect(children, finished)
    finally:
        for child, receive in children:
            if child.is_alive():
                child.terminate()
            child.join()
            receive.close()


def _collect(children: list[tuple[Any, Connection]], finished: Finished) -> None:
    open_ = {receive: child for child, receive in children}
    while open_:
        for receive in wait(list(open_)):
            try:
                message = receive.recv()  # type: ignore[union-attr]
            except EOFError:  # the child exited without saying it was done
                child = open_.pop(receive)  # type: ignore[index]
                child.join()
                raise GenerationWorkerError(
                    f"a generation process ended early (exit code {child.exitcode}; "
                    "out of memory? try --processes 1 or a smaller --batch-size)"
                ) from None
            kind, payload = message
            if kind == "done":
                open_.pop(receive)  # type: ignore[index]
            elif kind == "error":
                raise GenerationWorkerError(f"a generation process failed: {payload}")
            else:
                finished(*payload)


def _child(
    make_engine: Callable[[], engine.RaggedEngine], requests: list[Any], taken: Any, send: Connection
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)  # see the module docstring
    try:
        runner = make_engine()
        in_flight = 0

        def admit() -> list[Any]:  # called between decode steps: fill this process's free slots
            nonlocal in_flight
            new = []
            while in_flight < runner.slots:
                with taken.get_lock():
                    k = taken.value
                    if k >= len(requests):
                        break
                    taken.value = k + 1
                new.append(requests[k])
                in_flight += 1
            return new

        def done(request: Any) -> None:
            nonlocal in_flight
            in_flight -= 1
            send.send(("request", (request.index, request.tokens, request.stopped_by_eos)))

        runner.run([], on_done=done, admit=admit)
        send.send(("done", None))
    except BaseException as error:  # reported by the parent as one line
        with contextlib.suppress(OSError):  # the parent may be gone (a broken pipe): exit quietly
            send.send(("error", f"{type(error).__name__}: {error}"))
        os._exit(1)
    send.close()
