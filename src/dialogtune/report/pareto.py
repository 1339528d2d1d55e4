"""Quality against cost: which fine-tuning variants are worth their price (a Pareto view).

Each model is a point: its ROUGE (mean, with the bootstrap CI) and four costs of making it —
trainable parameters, the trained weights on disk (the adapter's or the model's safetensors,
without the tokenizer files every folder carries), training wall time and training peak memory.
A zero-shot model costs nothing on every axis: a variant it beats is not worth training.

Variant B is *dominated* by A when A scores at least as well and costs no more on every axis
considered, and is strictly better on one of them. The table marks dominance over all four costs
at once and on each cost alone; the plot draws one panel per cost with the frontier (the
variants no other beats on that cost) joined and the dominated ones hollow. Dominance compares
means: a difference inside the CIs is not significant (the Improvement section tests them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dialogtune.report.collect import RunSummary
from dialogtune.report.document import Table
from dialogtune.report.tables import DASH, human_bytes, human_count, human_seconds, label, with_ci

# (key, label, how a value prints)
AXES = (
    ("trainable_params", "trainable parameters", lambda v: human_count(int(v)) if v is not None else DASH),
    ("weights_bytes", "trained weights on disk", lambda v: human_bytes(int(v)) if v is not None else DASH),
    ("train_seconds", "training wall time", human_seconds),
    ("train_peak_mb", "training peak memory (MiB)", lambda v: f"{v:,.0f} MiB" if v is not None else DASH),
)


@dataclass
class ParetoPoint:
    """One model's quality and costs (``None``: the run did not record it)."""

    name: str
    method: str
    quality: float
    ci_low: float
    ci_high: float
    costs: dict[str, float | None]
    random_weights: bool = False
    dominated_by: list[str] = field(default_factory=list)  # over all four costs at once
    dominated_on: dict[str, list[str]] = field(default_factory=dict)  # per cost axis

    @property
    def zero_shot(self) -> bool:
        return self.costs.get("trainable_params") == 0


def pareto_points(runs: Sequence[RunSummary], metric: str = "rouge1") -> list[ParetoPoint]:
    """Quality and costs of every run, with dominance filled in."""
    points = []
    for run in runs:
        entry = run.metrics.get(metric) or {}
        train = run.training
        trained = train is not None
        points.append(
            ParetoPoint(
                name=run.name,
                method=run.method,
                quality=float(entry.get("mean", 0.0)),
                ci_low=float(entry.get("ci_low", entry.get("mean", 0.0))),
                ci_high=float(entry.get("ci_high", entry.get("mean", 0.0))),
                costs={
                    "trainable_params": float(run.trainable_params),
                    "weights_bytes": _number(train.weights_file_bytes) if trained else 0.0,
                    "train_seconds": _number(train.get("wall_time_s", "train_wall_time_s"))
                    if trained
                    else 0.0,
                    "train_peak_mb": _number(train.get("peak_memory_mb")) if trained else 0.0,
                },
                random_weights=run.random_weights,
            )
        )
    return mark_dominance(points)


def mark_dominance(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """Fill in who dominates each point: over all four costs, and on each cost alone."""
    keys = [key for key, *_ in AXES]
    for point in points:
        point.dominated_by = [o.name for o in points if dominates(o, point, keys)]
        point.dominated_on = {key: [o.name for o in points if dominates(o, point, [key])] for key in keys}
    return points


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def dominates(a: ParetoPoint, b: ParetoPoint, axes: Sequence[str]) -> bool:
    """``a`` scores at least as well as ``b`` and costs no more on every axis, strictly better once.

    An axis either run did not record says nothing: it is left out of the comparison (and with
    no axis left, nothing dominates).
    """
    if a is b:
        return False
    known = [k for k in axes if a.costs.get(k) is not None and b.costs.get(k) is not None]
    if not known or a.quality < b.quality:
        return False
    if any(a.costs[k] > b.costs[k] for k in known):  # type: ignore[operator]
        return False
    return a.quality > b.quality or any(a.costs[k] < b.costs[k] for k in known)  # type: ignore[operator]


def frontier(points: Sequence[ParetoPoint], axis: str) -> list[ParetoPoint]:
    """The points no other dominates on ``axis``, cheapest first (the plot joins them)."""
    kept = [p for p in points if p.costs.get(axis) is not None and not p.dominated_on.get(axis)]
    return sorted(kept, key=lambda p: (p.costs[axis], p.quality))


def pareto_table(points: Sequence[ParetoPoint], metric: str = "rouge1") -> Table:
    rows = []
    for p in sorted(points, key=lambda p: -p.quality):
        per_axis = [axis_label.split(" (")[0] for key, axis_label, _ in AXES if p.dominated_on.get(key)]
        rows.append(
            [
                p.name + (" (random weights)" if p.random_weights else ""),
                p.method,
                with_ci({"mean": p.quality, "ci_low": p.ci_low, "ci_high": p.ci_high}),
                *[show(p.costs.get(key)) for key, _, show in AXES],
                ("dominated by " + ", ".join(p.dominated_by)) if p.dominated_by else "Pareto-optimal",
                ", ".join(per_axis) or DASH,
            ]
        )
    return Table(
        [
            "Model",
            "Method",
            f"{label(metric)} [95% CI]",
            "Trainable params",
            "Weights on disk",
            "Train wall time",
            "Train peak memory",
            "All four costs",
            "Dominated on (one cost)",
        ],
        rows,
        title=f"{label(metric)} against the cost of fine-tuning",
        align=["l", "l"] + ["r"] * 5 + ["l", "l"],
        note="Dominated: another model scores at least as well (mean) and costs no more, strictly better "
        "in one; zero-shot costs nothing. Weights on disk: the safetensors of the adapter or model folder. "
        "Means inside each other's CIs are not significantly different (see Improvement).",
    )


def to_json(points: Sequence[ParetoPoint]) -> list[dict[str, object]]:
    return [
        {
            "name": p.name,
            "method": p.method,
            "quality": p.quality,
            "ci_low": p.ci_low,
            "ci_high": p.ci_high,
            "costs": p.costs,
            "dominated_by": p.dominated_by,
            "dominated_on": p.dominated_on,
        }
        for p in points
    ]
