"""The report's figures as PNG bytes (matplotlib, headless Agg backend).

PNG bytes rather than files: the same image is written next to ``report.md`` and embedded in
``report.html`` as a data URI, so the HTML needs nothing beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dialogtune.report.collect import RunSummary  # noqa: E402
from dialogtune.report.tables import label, rouge_types_of  # noqa: E402

if TYPE_CHECKING:
    from dialogtune.report.pareto import ParetoPoint

_DPI = 110


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _interval(run: RunSummary, metric: str) -> tuple[float, float, float]:
    """(mean, lower error, upper error) in points, for matplotlib's ``yerr``."""
    entry = run.metrics.get(metric) or {}
    mean = 100 * float(entry.get("mean", 0.0))
    low = 100 * float(entry.get("ci_low", entry.get("mean", 0.0)))
    high = 100 * float(entry.get("ci_high", entry.get("mean", 0.0)))
    return mean, max(0.0, mean - low), max(0.0, high - mean)


def _color(index: int) -> str:
    # One colour per model, the same in every figure, so a reader matches bars to points at a glance.
    return f"C{index % 10}"


def _legend_below(ax: Axes, entries: int) -> None:
    # Below the axes, never over the data however the bars and points fall.
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(entries, 3), frameon=False
    )


def rouge_bars_png(runs: Sequence[RunSummary]) -> bytes:
    """Grouped bars: one group per ROUGE type, one bar per model, 95% CI as error bars."""
    types = rouge_types_of(runs)
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(types) + 0.5 * len(runs)), 4.0))
    for k, run in enumerate(runs):
        stats = [_interval(run, t) for t in types]
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(types))]
        errors = [[s[1] for s in stats], [s[2] for s in stats]]
        hatch = "//" if run.random_weights else None
        bars = ax.bar(
            xs,
            [s[0] for s in stats],
            width,
            yerr=errors,
            capsize=3,
            color=_color(k),
            hatch=hatch,
            label=run.display_name,
        )
        ax.bar_label(bars, labels=[f"{s[0]:.1f}" for s in stats], padding=2, fontsize=7)
    ax.set_xticks(range(len(types)), [label(t) for t in types])
    ax.set_ylabel("F-measure x100 (95% CI)")
    ax.set_title("ROUGE per model")
    ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.15))  # room for the value labels
    _legend_below(ax, len(runs))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def quality_vs_params_png(runs: Sequence[RunSummary], metric: str = "rouge1") -> bytes:
    """Quality against trainable parameters (log scale); zero-shot runs are horizontal lines.

    Zero-shot models trained nothing, so they have no place on a log axis: a dashed line at their
    score (and a band for its CI) is the bar each fine-tuned point has to clear.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    tops = [1.0]
    for k, run in enumerate(runs):
        mean, low, high = _interval(run, metric)
        tops.append(mean + high)
        if run.trainable_params > 0:
            x = run.trainable_params
            ax.errorbar(
                [x],
                [mean],
                yerr=[[low], [high]],
                fmt="o",
                capsize=4,
                color=_color(k),
                label=f"{run.display_name}: {run.method}",
            )
            ax.annotate(run.name, (x, mean), textcoords="offset points", xytext=(6, 6), fontsize=8)
        else:
            ax.axhline(
                mean, linestyle="--", linewidth=1.2, color=_color(k), label=f"{run.display_name}: zero-shot"
            )
            ax.axhspan(mean - low, mean + high, alpha=0.12, color=_color(k))
    if any(r.trainable_params > 0 for r in runs):
        ax.set_xscale("log")
        ax.margins(x=0.25)  # keep points and their labels off the frame
        ax.set_xlabel("trainable parameters (log scale)")
    else:
        ax.set_xticks([])
        ax.set_xlabel("no fine-tuned models in this report")
    ax.set_ylim(0, max(tops) * 1.25)
    ax.set_ylabel(f"{label(metric)} x100 (95% CI)")
    ax.set_title(f"{label(metric)} vs trainable parameters")
    _legend_below(ax, len(runs))
    ax.grid(alpha=0.3)
    return _png(fig)


def pareto_png(points: Sequence[ParetoPoint], metric: str = "rouge1") -> bytes:
    """Quality against each cost of fine-tuning (one panel per cost, log scale).

    Filled points: on that cost's frontier (no other model scores at least as well for less);
    hollow: dominated. The frontier is joined by a line. Zero-shot models cost nothing: a dashed
    line at their score (and a band for its CI), the bar every fine-tuned point has to clear.
    """
    from dialogtune.report.pareto import AXES, frontier

    fig, grid = plt.subplots(2, 2, figsize=(11.0, 7.5))
    tops = [1.0] + [100 * p.ci_high for p in points]
    for ax, (key, axis_label, _) in zip(grid.flat, AXES):
        placed = False
        for k, p in enumerate(points):
            mean, low, high = 100 * p.quality, 100 * (p.quality - p.ci_low), 100 * (p.ci_high - p.quality)
            cost = p.costs.get(key)
            if cost is None:
                continue
            if cost <= 0:
                ax.axhline(mean, linestyle="--", linewidth=1.2, color=_color(k), label=p.name)
                ax.axhspan(mean - low, mean + high, alpha=0.12, color=_color(k))
                continue
            dominated = bool(p.dominated_on.get(key))
            ax.errorbar(
                [cost],
                [mean],
                yerr=[[max(low, 0.0)], [max(high, 0.0)]],
                fmt="o",
                capsize=3,
                color=_color(k),
                markerfacecolor="white" if dominated else _color(k),
                label=p.name + (" (dominated)" if dominated else ""),
            )
            ax.annotate(p.name, (cost, mean), textcoords="offset points", xytext=(5, 5), fontsize=7)
            placed = True
        line = [p for p in frontier(points, key) if (p.costs.get(key) or 0) > 0]
        if len(line) > 1:
            ax.plot([p.costs[key] for p in line], [100 * p.quality for p in line], color="0.4", linewidth=1)
        if placed:
            ax.set_xscale("log")
            ax.margins(x=0.2)
        ax.set_xlabel(axis_label + (" (log scale)" if placed else ""))
        ax.set_ylabel(f"{label(metric)} x100 (95% CI)")
        ax.set_ylim(0, max(tops) * 1.2)
        ax.grid(alpha=0.3)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle(f"{label(metric)} against the cost of fine-tuning (hollow: dominated on that cost)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return _png(fig)
