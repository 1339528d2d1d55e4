"""CPU threads for the server's model thread: every core, without OpenMP's throttling.

The server computes on one thread of its own (the model thread), not on the main thread that
loads the model and runs the event loop. PyTorch's CPU build parallelises with GNU OpenMP, which
gives every thread that runs parallel work a pool of worker threads that never exit. Loading the
model on the main thread with all cores leaves such a pool behind; the model thread then builds
a second one, and with more OpenMP threads than cores libgomp stops spinning between parallel
regions ("throttled" waiting): every one of the hundreds of small parallel regions of a decode
step then pays a sleep and a wake-up. Measured on this project's 2-core CPU (SmolLM2-135M, bf16,
one dialogue at a time, 64 new tokens, medians of 4): 2.40 s on the main thread with two threads,
4.21 s on another thread with two threads after loading with two, 3.07 s with one thread;
through ``dialogtune serve`` 4.65 s with two threads against 2.83 s with one.

So ``dialogtune serve`` loads the model with one thread (:func:`hold_for_model_thread`: no pool
on the main thread) and the model thread takes the cores when it starts
(:func:`enter_model_thread`): 2.42 s in the same measurement, the main thread's speed.
"""

from __future__ import annotations

import threading

_held: int | None = None


def hold_for_model_thread(threads: int | None = None) -> int:
    """Call on the main thread before the model is loaded: keep ``threads`` (default: torch's
    current count, i.e. every core or ``OMP_NUM_THREADS``) for the model thread and run this
    thread on one. Returns the count held."""
    import torch

    global _held
    _held = threads or torch.get_num_threads()
    torch.set_num_threads(1)
    return _held


def enter_model_thread() -> None:
    """Call first thing on the model thread: take the count held for it (nothing if none was)."""
    if _held is None or threading.current_thread() is threading.main_thread():
        return
    import torch

    torch.set_num_threads(_held)


def held() -> int | None:
    """The count held for the model thread (None: the server was not started by ``serve``)."""
    return _held


def release() -> None:
    """Forget the held count (tests)."""
    global _held
    _held = None
