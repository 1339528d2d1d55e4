"""The sweep's report: best trial, table of trials, plots; Markdown + self-contained HTML.

Reuses the report block's document model and renderer (:mod:`dialogtune.report.document`,
:mod:`dialogtune.report.render`). Plots: the objective by trial (with the probe's 95% CIs and the
best so far), parameter importance (fANOVA, see :func:`results.parameter_importances`), the objective at each
evaluation per trial (where pruning shows), and Optuna's matplotlib slice and parallel-coordinate
plots.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dialogtune.io import atomic_open, write_text  # noqa: E402
from dialogtune.ownership import claim_output_dir, mark  # noqa: E402
from dialogtune.report.document import Document, Image, Paragraph, Preformatted, Section, Table  # noqa: E402
from dialogtune.report.render import render_html, render_markdown  # noqa: E402
from dialogtune.sweep.config import SweepConfig  # noqa: E402
from dialogtune.sweep.results import format_seconds  # noqa: E402
from dialogtune.sweep.space import format_value, short_names  # noqa: E402

_DPI = 110
_MARKERS = {"complete": ("o", "C0"), "pruned": ("x", "C3")}


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def metric_by_trial_png(rows: list[dict[str, Any]], metric: str, direction: str) -> bytes:
    """Each finished trial's value (95% CI where the probe gives one) and the best so far."""
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for state, (marker, color) in _MARKERS.items():
        points = [r for r in rows if r["state"] == state and r["value"] is not None]
        if not points:
            continue
        xs, ys = [r["number"] for r in points], [r["value"] for r in points]
        low = [r["value"] - r["ci_low"] if r["ci_low"] is not None else 0.0 for r in points]
        high = [r["ci_high"] - r["value"] if r["ci_high"] is not None else 0.0 for r in points]
        ax.errorbar(xs, ys, yerr=[low, high], fmt=marker, color=color, capsize=3, label=state)
    complete = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: r["number"])
    if complete:
        pick = max if direction == "maximize" else min
        best, xs, ys = None, [], []
        for row in complete:
            best = row["value"] if best is None else pick(best, row["value"])
            xs.append(row["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C2", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric} ({'higher' if direction == 'maximize' else 'lower'} is better)")
    ax.set_title(f"{metric} by trial (last evaluation of each)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def importance_png(importances: dict[str, float]) -> bytes:
    names = short_names(list(importances))
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(importances)))
    keys = list(importances)[::-1]  # most important on top
    ax.barh([names[k] for k in keys], [importances[k] for k in keys], color="C0")
    ax.set_xlabel("importance (share of the objective's variance, fANOVA)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _optuna_png(plot: Any, study: Any, *, shorten: bool = False) -> bytes:
    # Optuna's matplotlib plots switch the global style to ggplot: keep that inside this figure.
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        for ax in figure.axes:  # long labels (lists of module names, key names) would overlap
            ticks = ax.get_xticklabels()
            texts = [t.get_text() for t in ticks]
            if ax.get_xscale() != "linear":
                continue
            if not any(len(t) > 12 and not t.startswith("$") for t in texts):
                if shorten and all(_is_number(t) for t in texts):  # narrow panels: fewer number ticks
                    ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
                continue
            labels = [_short(t) for t in texts] if shorten else texts
            ax.set_xticks(ax.get_xticks(), labels, rotation=25, ha="right")
        return _png(figure)


def _is_number(text: str) -> bool:
    try:
        float(text.replace("\u2212", "-"))
    except ValueError:
        return False
    return True


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_sweep_document(
    config: SweepConfig,
    study: Any,
    rows: list[dict[str, Any]],
    storage: str,
    importances: dict[str, float] | None = None,
) -> Document:
    from optuna.visualization import matplotlib as ovm

    metric, direction = config.objective.metric, config.objective.direction or "maximize"
    keys = [p.key for p in config.params]
    names = short_names(keys)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "failed", "running")}
    complete = [r for r in rows if r["state"] == "complete"]
    pick = max if direction == "maximize" else min
    best = pick(complete, key=lambda r: r["value"]) if complete else None
    measured = "eval loss" if metric == "loss" else f"{metric} of the ROUGE probe"
    budget = ", ".join(
        b
        for b in (
            f"{config.budget.steps} steps" if config.budget.steps else "",
            f"{config.budget.minutes:g} minutes" if config.budget.minutes else "",
        )
        if b
    )
    overview = Section(
        "Overview",
        "overview",
        [
            Paragraph(
                f"Study {config.name} ({storage}): {counts['complete']} complete, {counts['pruned']} pruned, "
                f"{counts['failed']} failed, {counts['running']} running. Objective: the {measured} at each "
                f"trial's last evaluation, to {direction}. Per-trial budget: {budget or 'the base config'}. "
                f"Base config: {config.base_path()}; pruner {config.pruner.kind}, sampler {config.sampler.kind} "
                f"(seed {config.sampler.seed})."
            )
        ],
    )
    if best is not None:
        ci = (
            f" [{best['ci_low']:.4f}, {best['ci_high']:.4f}] (95% bootstrap CI over {best['n']} dialogues)"
            if best["ci_low"] is not None
            else ""
        )
        overview.blocks.append(
            Paragraph(
                f"Best: trial {best['number']}, {metric} {best['value']:.4f}{ci}. Its training config is "
                "best.yaml in the sweep folder (dialogtune train best.yaml)."
            )
        )
        overview.blocks.append(
            Table(
                ["key", "best value"],
                [[k, format_value(v)] for k, v in best["params"].items()],
                align=["l", "l"],
            )
        )
    else:
        overview.blocks.append(Paragraph("No trial has completed yet.", kind="warning"))

    table_rows = [
        [
            str(r["number"]),
            r["state"],
            "-" if r["value"] is None else f"{r['value']:.4f}",
            "-" if r["ci_low"] is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
            *[format_value(r["params"][k]) if k in r["params"] else "-" for k in keys],
            "-" if r["steps"] is None else str(r["steps"]),
            format_seconds(r["wall_time_s"]),
            "-" if not r["peak_memory_mb"] else f"{r['peak_memory_mb'] / 1024:.2f}",
        ]
        for r in rows
    ]
    trials = Section(
        "Trials",
        "trials",
        [
            Table(
                ["trial", "state", metric, "95% CI", *[names[k] for k in keys], "steps", "time", "peak GB"],
                table_rows,
                note="A pruned trial stopped at an evaluation the pruner judged unpromising; its value is "
                "that evaluation. Failed trials (diverged, crashed, killed) have no value: see trials.json.",
            )
        ],
    )

    plots = Section("Plots", "plots")
    if any(r["value"] is not None for r in rows):
        plots.blocks.append(
            Image("metric_by_trial.png", metric_by_trial_png(rows, metric, direction), f"{metric} by trial")
        )
    if importances:
        plots.blocks.append(Image("importance.png", importance_png(importances), "parameter importance"))
        plots.blocks.append(Table(["key", "importance"], [[k, f"{v:.3f}"] for k, v in importances.items()]))
    else:
        plots.blocks.append(
            Paragraph(
                "Parameter importance needs scikit-learn (pip install 'dialogtune[sweep]') and at least "
                "two complete trials that differ."
            )
        )
    if any(r["evaluations"] for r in rows):
        plots.blocks.append(
            Image(
                "intermediate.png",
                _optuna_png(ovm.plot_intermediate_values, study),
                f"{metric} at each evaluation",
                caption="each line is a trial; pruned ones end early",
            )
        )
    if complete:
        plots.blocks.append(
            Image("slice.png", _optuna_png(ovm.plot_slice, study, shorten=True), f"{metric} against each key")
        )
        if len(keys) >= 2 and len(complete) >= 2:
            plots.blocks.append(
                Image(
                    "parallel.png", _optuna_png(ovm.plot_parallel_coordinate, study), "parallel coordinates"
                )
            )
    settings = Section(
        "Settings",
        "settings",
        [Preformatted(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))],
    )
    best_text = "-" if best is None else f"{best['value']:.4f}"
    return Document(
        title=f"Sweep {config.name}: {metric}",
        subtitle=f"{len(rows)} trials; best {metric} {best_text}",
        sections=[overview, trials, plots, settings],
    )


def write_sweep_report(
    config: SweepConfig,
    study: Any,
    rows: list[dict[str, Any]],
    output_dir: Path,
    storage: str,
    importances: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Write report.md (+ its PNGs) and a self-contained report.html into ``output_dir``."""
    out, _ = claim_output_dir(output_dir, "report", overwrite=False, what="report folder")
    doc = build_sweep_document(config, study, rows, storage, importances)
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "report")
    paths = {"markdown": out / "report.md", "html": out / "report.html"}
    for image in doc.images():
        with atomic_open(out / image.filename, "wb") as handle:
            handle.write(image.png)
        paths[image.filename] = out / image.filename
    write_text(paths["markdown"], render_markdown(doc))
    write_text(paths["html"], render_html(doc))
    return paths
