"""Run a sweep: an Optuna study over training configs, resumable and shareable between machines.

Layout of the sweep folder (``output_dir``, default ``runs/sweeps/NAME``)::

    sweep.yaml            the resolved sweep file
    study.db              the Optuna study (SQLite), unless --storage names another database
    trials/trial-0007/    trial 7: an ordinary training run directory (dialogtune train)
    logs/trial-0007.log   its output, when progress is off
    trials.json, .csv     every trial: values, metric with CI, state, steps, time, peak memory
    best.yaml             the best trial's training config, ready for dialogtune train
    report/               report.md, report.html and the plots

The study storage is the truth: trials are numbered by it, so two workers never train into the
same folder, and a rerun continues the study where it stopped. A trial whose worker died is
failed and queued again (same values, a new number and folder): at once when the dead process ran
on this machine, after ``grace_seconds`` without a heartbeat otherwise (Optuna's heartbeat).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.errors import ConfigError, DialogtuneError
from dialogtune.ownership import claim_output_dir, mark
from dialogtune.runinfo import write_yaml
from dialogtune.sweep.config import SweepConfig, check_sweep
from dialogtune.sweep.results import trial_line, write_results
from dialogtune.sweep.space import format_value, short_names
from dialogtune.sweep.study import RetryDeadTrial, masked, open_study, remove_unfinished, trial_folder
from dialogtune.sweep.trial import TrialFailed, TrialJob, TrialOutcome, run_trial

LOGS = "logs"
Log = Callable[[str], None]


def _stdout(message: str) -> None:
    print(message, flush=True)


@dataclass
class SweepResult:
    sweep_dir: Path
    storage: str  # the URL, password hidden
    stopped: str  # why this worker stopped
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    importances: dict[str, float] | None = None
    files: dict[str, Path] = field(default_factory=dict)


def run_sweep(
    config: SweepConfig,
    *,
    storage: str | None = None,
    trials: int | None = None,
    progress: bool = True,
    report: bool = True,
    log: Log = _stdout,
) -> SweepResult:
    """Run trials until the study holds ``trials`` (default ``config.trials``) finished ones.

    Args:
        storage: an Optuna RDB URL (``sqlite:///x.db``, ``postgresql://...``); default: the sweep
            file's ``storage``, else ``sqlite:///<output_dir>/study.db``.
        progress: show each trial's training progress; without it, it goes to ``logs/``.
        report: write ``report/`` (the table and ``best.yaml`` are always written).
    """
    _quiet_optuna()
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be a positive integer, got {trials}")
    fixed = check_sweep(config)
    out = _claim_sweep_dir(config)
    url = storage or config.storage or f"sqlite:///{out / 'study.db'}"
    study = open_study(config, url, out, fixed.to_dict())
    write_yaml(out / "sweep.yaml", config.to_dict())
    worker = _Worker(config, study, out, trials or config.trials, progress, log)
    result = SweepResult(sweep_dir=out, storage=masked(url), stopped="interrupted")
    try:
        result.stopped = worker.run()
    finally:
        # Also after an interruption or an error: the table says what the study holds so far.
        result.rows, result.best, result.importances, result.files = write_results(
            config, study, out, result.storage, trials or config.trials
        )
    if report:
        from dialogtune.sweep.report import write_sweep_report

        result.files.update(
            write_sweep_report(config, study, result.rows, out / "report", result.storage, result.importances)
        )
    return result


def _claim_sweep_dir(config: SweepConfig) -> Path:
    """The sweep folder: new, or an earlier sweep's (resumed). Workers started at the same moment
    may race to create it, so it appears with its marker in one step (a renamed temporary folder)."""
    what = "sweep output_dir"
    out, state = claim_output_dir(config.sweep_dir, "sweep", overwrite=False, what=what)
    if state == "new":
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staged.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the results from other users
        mark(staged, "sweep", name=config.name)
        try:
            os.rename(staged, out)  # onto nothing or an empty folder; fails if another worker won
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
            claim_output_dir(out, "sweep", overwrite=False, what=what)  # it must be a sweep's now
    return out


# ---- one worker's loop -------------------------------------------------------------------------


def _this_machine() -> dict[str, Any]:
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return {"host": socket.gethostname(), "boot": boot, "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class _Worker:
    def __init__(
        self, config: SweepConfig, study: Any, out: Path, target: int, progress: bool, log: Log
    ) -> None:
        self.config, self.study, self.out, self.target = config, study, out, target
        self.progress, self.log = progress, log
        self.machine = _this_machine()
        self.names = short_names([p.key for p in config.params])

    def run(self) -> str:
        import optuna
        from optuna.trial import TrialState

        while True:
            self._fail_dead_local_trials()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fail_stale_trials is "experimental"
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            failed = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
            if done >= self.target:
                return f"the study holds {done} finished trials (target {self.target})"
            if done + running >= self.target:
                return (
                    f"{done} trials finished and {running} running in other workers (target {self.target}); "
                    "rerun later for their results"
                )
            if len(failed) >= self.config.max_failures:
                raise DialogtuneError(
                    f"{len(failed)} trials failed (trial {failed[-1].number}: {failed[-1].user_attrs['error']}); "
                    "see trials.csv, fix the cause or raise max_failures"
                )
            self.study.optimize(self._objective, n_trials=1, catch=(TrialFailed,), callbacks=[self._print])

    def _fail_dead_local_trials(self) -> None:
        """RUNNING trials started on this machine by a process that no longer exists (kill -9,
        a crash, a reboot): failed and retried now, without waiting for the heartbeat's grace."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        retry = RetryDeadTrial(self.out, remove_folder=True)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker") or {}
            same_machine = (worker.get("host"), worker.get("boot")) == (
                self.machine["host"],
                self.machine["boot"],
            )
            pid = worker.get("pid")
            if not same_machine or not isinstance(pid, int) or pid == os.getpid() or _alive(pid):
                continue
            try:
                frozen = self.study.tell(trial.number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError, RuntimeError):
                continue  # another worker got there first
            self.log(f"trial {trial.number:>3}  failed    its process ({pid}) died; queued again")
            retry(self.study, frozen)

    def _objective(self, trial: Any) -> float:
        import optuna

        config = self.config
        params = {p.key: p.suggest(trial) for p in config.params}
        folder = trial_folder(self.out, trial.number)
        trial.set_user_attr("worker", self.machine)
        trial.set_user_attr("run_dir", str(folder.relative_to(self.out)))
        shown = "  ".join(f"{self.names[k]}={format_value(v)}" for k, v in params.items())
        self.log(f"trial {trial.number:>3}  started   {shown}")
        started = time.time()
        try:
            train_config = config.trial_config(params, folder)
        except ConfigError as exc:  # a combination of values the training config refuses
            trial.set_user_attr("error", f"invalid values: {exc}")
            raise TrialFailed(str(exc)) from None
        job = TrialJob(
            config=train_config,
            eval_key=config.objective.eval_key,
            minutes=config.budget.minutes,
            warmup_evaluations=config.pruner.warmup_evaluations,
            progress=self.progress,
            log_file=None if self.progress else str(self.out / LOGS / f"{folder.name}.log"),
        )

        def report(step: int, value: float, may_prune: bool) -> bool:
            trial.report(value, step)
            return may_prune and trial.should_prune()

        try:
            outcome = run_trial(job, report, isolate=config.isolate)
        except TrialFailed as exc:
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("wall_time_s", round(time.time() - started, 2))
            raise
        except KeyboardInterrupt:
            # Optuna marks the trial failed; queue its values again so that a rerun trains them
            # (in a folder of its own: this one is half-written, and its process has stopped).
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            remove_unfinished(folder)
            raise
        self._record(trial, outcome, time.time() - started)
        if outcome.value is None:
            trial.set_user_attr("error", f"no evaluation reported {config.objective.eval_key}")
            raise TrialFailed(f"trial {trial.number} reported no {config.objective.eval_key}")
        if outcome.pruned:
            raise optuna.TrialPruned(f"pruned at step {outcome.step}")
        return outcome.value

    def _record(self, trial: Any, outcome: TrialOutcome, seconds: float) -> None:
        """What the table needs, kept in the study (other machines' trial folders are not here)."""
        meta = outcome.metadata or {}
        metric = self.config.objective.metric
        probe = meta.get("last_probe") or {}
        interval = probe.get(metric) if metric != "loss" else None
        eval_data = (meta.get("data") or {}).get("eval") or {}
        attrs = {
            "step": outcome.step,
            "steps": (meta.get("train") or {}).get("global_step"),
            "stopped_by": outcome.stopped_by,
            "evaluations": len(outcome.evaluations),
            "ci_low": interval.get("ci_low") if interval else None,
            "ci_high": interval.get("ci_high") if interval else None,
            "n": probe.get("n") if metric != "loss" else eval_data.get("examples"),
            "wall_time_s": meta.get("wall_time_s", round(seconds, 2)),
            "peak_memory_mb": meta.get("peak_memory_mb"),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _print(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        done = sum(
            t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False)
        )
        self.log(trial_line(trial, self.config, self.names) + f"  [{done}/{self.target}]")


def _quiet_optuna() -> None:
    """This verb prints its own line per trial; Optuna's INFO lines and experimental-feature
    warnings (heartbeat, multivariate TPE, the matplotlib plots) would repeat it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
