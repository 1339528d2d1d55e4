"""One trial: an ordinary training run, watched by a Trainer callback that feeds the pruner.

The callback reads the objective from every evaluation (``eval_rouge1`` from the ROUGE probe, or
``eval_loss``), reports it, and stops training cleanly when the pruner says so or when the
trial's minutes are spent (after one last evaluation, which then counts). The run directory is
finished as usual (weights, ``metadata.json``), so a pruned trial is a complete, shorter run.

A trial trains in this process or, with ``isolate``, in a fresh one (``spawn``): its peak memory
and wall time are then its own, compiled code and allocator caches do not pile up over trials,
and a crash of the trial (out of memory) does not end the sweep. The child sends each evaluation
to this process, which talks to Optuna and answers "go on" or "stop"; the child never touches the
study storage.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from dialogtune.errors import DialogtuneError

# report(step, value, may_prune) -> True to stop the trial (pruned)
Reporter = Callable[[int, float, bool], bool]


class TrialFailed(DialogtuneError):
    """A trial that ended without a result (diverged, crashed, invalid values): the study records
    it as failed and goes on with the next trial."""


@dataclass
class TrialOutcome:
    value: float | None = None  # the objective at the last evaluation
    step: int | None = None  # the optimizer step of that evaluation
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    pruned: bool = False
    stopped_by: str = "steps"  # steps (the run's own end), minutes, pruned
    metadata: dict[str, Any] = field(default_factory=dict)  # the run's metadata.json


class SweepCallback(TrainerCallback):
    """Reports the objective at each evaluation; stops training when pruned or out of time."""

    def __init__(
        self, eval_key: str, reporter: Reporter, *, minutes: float | None = None, warmup_evaluations: int = 1
    ) -> None:
        self.eval_key = eval_key
        self.reporter = reporter
        self.minutes = minutes
        self.warmup_evaluations = warmup_evaluations
        self.outcome = TrialOutcome()
        self._started = time.monotonic()
        self._counted = 0  # evaluations after step 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._started = time.monotonic()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.minutes is None or state.global_step >= state.max_steps:
            return
        if time.monotonic() - self._started < 60 * self.minutes:
            return
        # Out of time: stop after this step, evaluated (the objective is the last evaluation) and
        # saved (so the best-checkpoint logic sees it). Epoch evaluation runs at the epoch's end.
        control.should_training_stop = True
        if args.eval_strategy == "steps":
            control.should_evaluate = True
        if args.save_strategy == "steps":
            control.should_save = True
        self.outcome.stopped_by = "minutes"

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        value = (metrics or {}).get(self.eval_key)
        if value is None:
            return
        step = state.global_step
        self.outcome.value, self.outcome.step = float(value), step
        self.outcome.evaluations.append((step, float(value)))
        if step > 0:
            self._counted += 1  # the step-0 baseline (eval.on_start) is the same for every trial
        if self.reporter(step, float(value), step > 0 and self._counted >= self.warmup_evaluations):
            control.should_training_stop = True
            self.outcome.pruned = True
            self.outcome.stopped_by = "pruned"


@dataclass
class TrialJob:
    """Everything a trial process needs (picklable)."""

    config: Any  # TrainConfig
    eval_key: str
    minutes: float | None
    warmup_evaluations: int
    progress: bool
    log_file: str | None  # quiet trials write their output here


def run_trial(job: TrialJob, reporter: Reporter, *, isolate: bool) -> TrialOutcome:
    """Train one trial; raises :class:`TrialFailed` for a trial that ends without a result."""
    if isolate:
        return _run_in_subprocess(job, reporter)
    reset_peak_memory()  # metadata.json's peak then measures this trial, not the sweep so far
    with _output_to(job.log_file):
        return _train(job, reporter)


def _train(job: TrialJob, reporter: Reporter) -> TrialOutcome:
    from dialogtune.training import train
    from dialogtune.training.trainer import TrainingDiverged

    callback = SweepCallback(
        job.eval_key, reporter, minutes=job.minutes, warmup_evaluations=job.warmup_evaluations
    )
    try:
        result = train(job.config, progress=job.progress, callbacks=[callback])
    except TrainingDiverged as exc:
        raise TrialFailed(str(exc)) from None
    callback.outcome.metadata = result.metadata
    del result
    gc.collect()
    return callback.outcome


def reset_peak_memory() -> None:
    """Reset this process's peak resident memory (Linux: ``/proc/self/clear_refs``), which
    ``ru_maxrss`` (metadata.json's ``peak_memory_mb``) then reports from here on."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@contextlib.contextmanager
def _output_to(log_file: str | None):  # type: ignore[no-untyped-def]
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_file, "a", encoding="utf-8") as handle,
        contextlib.redirect_stdout(handle),
        contextlib.redirect_stderr(handle),
    ):
        yield


# ---- a trial in its own process --------------------------------------------------------------


def _run_in_subprocess(job: TrialJob, reporter: Reporter) -> TrialOutcome:
    import torch

    context = multiprocessing.get_context("spawn")  # no fork: torch threads and CUDA do not survive it
    ours, theirs = context.Pipe()
    child = context.Process(target=_child, args=(job, theirs, os.getpid(), torch.get_num_threads()))
    child.start()
    theirs.close()
    try:
        while True:
            try:
                message = ours.recv()
            except EOFError:
                child.join()
                raise TrialFailed(
                    f"the trial's process ended without a result (exit code {child.exitcode}"
                    + (", killed: out of memory?" if child.exitcode == -9 else "")
                    + (f"; see {job.log_file}" if job.log_file else "; see above")
                    + ")"
                ) from None
            kind, payload = message
            if kind == "report":
                ours.send(reporter(*payload))
            elif kind == "done":
                child.join()
                return payload
            elif kind == "failed":
                child.join()
                raise TrialFailed(payload)
            else:  # "error": a problem of the sweep, not of this trial's values
                child.join()
                raise DialogtuneError(payload)
    except BaseException:
        if child.is_alive():
            child.terminate()
            child.join()
        raise
    finally:
        ours.close()


def _child(job: TrialJob, conn: Any, parent: int, threads: int) -> None:
    import torch

    from dialogtune.experiments.runner import _die_with_parent

    _die_with_parent(parent)  # a killed sweep takes its trial with it
    torch.set_num_threads(threads)
    if job.log_file is not None:  # the whole process's output, native libraries included
        Path(job.log_file).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(job.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def report(step: int, value: float, may_prune: bool) -> bool:
        conn.send(("report", (step, value, may_prune)))
        return bool(conn.recv())

    try:
        outcome = _train(job, report)
    except TrialFailed as exc:
        conn.send(("failed", str(exc)))
        return
    except DialogtuneError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("done", outcome))
