"""What a sweep leaves: the table of trials (JSON + CSV), ``best.yaml``, and the line per trial.

Everything is read from the study storage (values, parameters, and the figures each trial
recorded as user attributes: CI, steps, wall time, peak memory), so a worker writes the whole
table even for trials that other machines trained.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from dialogtune.io import write_json, write_text
from dialogtune.sweep.config import SweepConfig
from dialogtune.sweep.space import format_value

_STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def trial_row(trial: Any, config: SweepConfig) -> dict[str, Any]:
    """One trial as a plain mapping (a row of trials.json / trials.csv)."""
    by_key = {p.key: p for p in config.params}
    attrs = trial.user_attrs
    stored = trial.params or trial.system_attrs.get("fixed_params") or {}  # queued: not yet suggested
    params = {key: by_key[key].decode(value) if key in by_key else value for key, value in stored.items()}
    seconds = attrs.get("wall_time_s")
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
    retried = trial.system_attrs.get("failed_trial", attrs.get("retry_of"))
    return {
        "number": trial.number,
        "state": _STATES.get(trial.state.name, trial.state.name.lower()),
        "value": trial.value if trial.values else None,
        "ci_low": attrs.get("ci_low"),
        "ci_high": attrs.get("ci_high"),
        "n": attrs.get("n"),
        "params": params,
        "steps": attrs.get("steps"),
        "evaluations": attrs.get("evaluations"),
        "stopped_by": attrs.get("stopped_by"),
        "wall_time_s": seconds,
        "peak_memory_mb": attrs.get("peak_memory_mb"),
        "run_dir": attrs.get("run_dir"),
        "retry_of": retried,
        "error": attrs.get("error"),
    }


def best_row(study: Any, config: SweepConfig) -> dict[str, Any] | None:
    try:
        return trial_row(study.best_trial, config)
    except ValueError:  # no complete trial yet
        return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def format_metric(row: dict[str, Any], metric: str) -> str:
    if row["value"] is None:
        return "-"
    text = f"{metric} {row['value']:.4f}"
    if row["ci_low"] is not None and row["ci_high"] is not None:
        text += f" [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
    return text + (f" n={row['n']}" if row["n"] else "")


def trial_line(trial: Any, config: SweepConfig, names: dict[str, str]) -> str:
    """The progress line of a finished trial: number, state, value, params, steps, time, memory."""
    row = trial_row(trial, config)
    parts = [f"trial {row['number']:>3}", f"{row['state']:<8}", format_metric(row, config.objective.metric)]
    parts.append(" ".join(f"{names.get(k, k)}={format_value(v)}" for k, v in row["params"].items()))
    if row["steps"] is not None:
        parts.append(f"{row['steps']} steps")
    parts.append(format_seconds(row["wall_time_s"]))
    if row["peak_memory_mb"]:
        parts.append(f"{row['peak_memory_mb'] / 1024:.1f} GB")
    if row["error"]:
        parts.append(f"error: {row['error']}")
    return "  ".join(parts)


def _csv(rows: list[dict[str, Any]], config: SweepConfig) -> str:
    keys = [p.key for p in config.params]
    metric = config.objective.metric
    head = ["number", "state", metric, "ci_low", "ci_high", "n", *keys, "steps", "stopped_by"]
    head += ["wall_time_s", "peak_memory_mb", "run_dir", "retry_of", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for row in rows:
        values = {**row, metric: row["value"], **{k: format_value(v) for k, v in row["params"].items()}}
        writer.writerow(["" if values.get(h) is None else values.get(h) for h in head])
    return buffer.getvalue()


def best_config_text(config: SweepConfig, best: dict[str, Any]) -> str:
    """``best.yaml``: base + set + budget + the best trial's values, as ``dialogtune train`` reads it."""
    import yaml

    train_config = config.trial_config(best["params"], f"runs/{config.name}-best").to_dict()
    train_config["output_dir"] = f"runs/{config.name}-best"  # relative: wherever it is trained
    budget = ", ".join(
        part
        for part in (
            f"{config.budget.steps} steps" if config.budget.steps else "",
            f"{config.budget.minutes:g} minutes" if config.budget.minutes else "",
        )
        if part
    )
    values = ", ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
    header = [
        f"# The best trial of sweep {config.name}: trial {best['number']}, "
        f"{format_metric(best, config.objective.metric)}, {best['steps']} steps.",
        f"# Base {config.base_path()} + set + budget + its values: {values}.",
        f"# Trials were short ({budget or 'the base config length'}): for the full recipe raise "
        "training.max_steps / training.epochs"
        + (" (the minutes budget is not part of this config)." if config.budget.minutes else "."),
        "#   dialogtune train best.yaml",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(train_config, sort_keys=False, allow_unicode=True)


def parameter_importances(study: Any) -> dict[str, float] | None:
    """Each key's share of the objective's variance over the complete trials: Optuna's fANOVA
    (a random forest fitted to the trials, its variance split by key; Hutter et al. 2014).
    Chosen over Optuna's default (PED-ANOVA, which asks what sets the top 10% apart) because a
    short study has one or two trials in its top 10%. ``None`` without scikit-learn or with
    fewer than two complete trials."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ImportError, ValueError, RuntimeError, ZeroDivisionError):  # no sklearn; no variation
        return None
    return {key: round(float(value), 4) for key, value in found.items()}


def write_results(
    config: SweepConfig, study: Any, out: Path, storage: str, target: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, float] | None, dict[str, Path]]:
    """Write trials.json, trials.csv and (once a trial completed) best.yaml into ``out``."""
    rows = [trial_row(t, config) for t in study.get_trials(deepcopy=False)]
    best = best_row(study, config)
    importances = parameter_importances(study)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    files = {"json": out / "trials.json", "csv": out / "trials.csv"}
    write_json(
        files["json"],
        {
            "study": config.name,
            "storage": storage,
            "objective": {"metric": config.objective.metric, "direction": config.objective.direction},
            "target": target,
            "counts": counts,
            "best": best,
            "importance": importances,
            "trials": rows,
        },
    )
    write_text(files["csv"], _csv(rows, config))
    if best is not None:
        files["best"] = out / "best.yaml"
        write_text(files["best"], best_config_text(config, best))
    return rows, best, importances, files
