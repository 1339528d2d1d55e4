"""The report's numeric tables: ROUGE with CIs, improvements with paired tests, and costs.

All ROUGE numbers are F-measures shown in points (x100, "41.23" = 0.4123); differences are in
points too, as the notebook's "absolute percentage improvement". A difference is *significant*
when the paired bootstrap's 95% interval of the mean per-example difference excludes zero
(``evaluation.bootstrap.paired_bootstrap``), computed on the dialogues both runs scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dialogtune.evaluation.bootstrap import paired_bootstrap
from dialogtune.report.collect import RunSummary, lookup, same_example
from dialogtune.report.document import Table

DASH = "\u2014"
ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def label(rouge_type: str) -> str:
    return ROUGE_LABELS.get(rouge_type, rouge_type)


def pts(value: float | None, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def with_ci(entry: dict | None, signed: bool = False) -> str:
    if not entry or entry.get("mean") is None:
        return DASH
    return f"{pts(entry['mean'], signed)} [{pts(entry.get('ci_low'), signed)}, {pts(entry.get('ci_high'), signed)}]"


def human_count(n: int | None) -> str:
    if n is None:
        return DASH
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def human_bytes(n: int | None) -> str:
    if n is None:
        return DASH
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    minutes, seconds = divmod(int(round(s)), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


def rouge_types_of(runs: Sequence[RunSummary]) -> list[str]:
    """ROUGE types every run has, in the first run's order."""
    common = [t for t in runs[0].rouge_types if all(t in r.metrics for r in runs)]
    return common or list(runs[0].rouge_types)


def quantitative_tables(runs: Sequence[RunSummary]) -> list[Table]:
    """Mean-over-references and max-over-references ROUGE, each with its 95% bootstrap CI."""
    types = rouge_types_of(runs)
    headers = ["Model", "Method", "n", *[f"{label(t)} [95% CI]" for t in types]]
    align = ["l", "l"] + ["r"] * (len(headers) - 2)
    mean_rows, max_rows = [], []
    for run in runs:
        lead = [run.display_name, run.method, str(run.metrics.get("n", len(run.predictions)))]
        mean_rows.append(lead + [with_ci(run.metrics.get(t)) for t in types])
        max_rows.append(lead + [with_ci(lookup(run.metrics, f"max_over_references.{t}")) for t in types])
    single = all(r.metrics.get("n_references") == r.metrics.get("n") for r in runs)
    note = (
        "Each dialogue has one reference here, so max-over-references equals the mean."
        if single
        else "Each dialogue's best-matching reference; the notebook's hub test split has 3."
    )
    return [
        Table(
            headers,
            mean_rows,
            title="Mean over references (headline)",
            align=align,
            note="ROUGE F-measure x100; per dialogue the mean over its references, then the mean over "
            "dialogues; 95% percentile-bootstrap interval in brackets.",
        ),
        Table(headers, max_rows, title="Max over references", note=note, align=align),
    ]


@dataclass(frozen=True)
class Comparison:
    """B against A on one ROUGE type, paired on the dialogues both scored."""

    a: str
    b: str
    metric: str
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    n: int

    @property
    def relative(self) -> float | None:
        return self.diff / self.mean_a if self.mean_a else None


def paired_scores(a: RunSummary, b: RunSummary, metric: str) -> tuple[list[float], list[float]]:
    """Per-example scores of ``a`` and ``b`` on the dialogues both scored (same id, same dialogue and
    references: ids alone may coincide across different data), in ``a``'s order."""
    b_scores = b.scores_by_id
    common = [
        i
        for i, s in a.scores_by_id.items()
        if i in b_scores
        and metric in s
        and metric in b_scores[i]
        and same_example(a.rows_by_id.get(i), b.rows_by_id.get(i))
    ]
    return [a.scores_by_id[i][metric] for i in common], [b_scores[i][metric] for i in common]


def compare(
    a: RunSummary,
    b: RunSummary,
    rouge_types: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[Comparison]:
    """Paired bootstrap of ``b - a`` for each ROUGE type; empty when they share no dialogue."""
    out = []
    for metric in rouge_types:
        a_values, b_values = paired_scores(a, b, metric)
        if not a_values:
            continue
        test = paired_bootstrap(a_values, b_values, n_resamples=n_resamples, confidence=confidence, seed=seed)
        out.append(
            Comparison(
                a=a.name,
                b=b.name,
                metric=metric,
                mean_a=test["mean_a"],
                mean_b=test["mean_b"],
                diff=test["diff"],
                ci_low=test["ci_low"],
                ci_high=test["ci_high"],
                p_value=test["p_value"],
                significant=test["significant"],
                n=test["n"],
            )
        )
    return out


def lora_full_pairs(runs: Sequence[RunSummary]) -> list[tuple[RunSummary, RunSummary]]:
    """``(full, lora)`` pairs on the same base model (or any full run when bases are unknown)."""
    fulls = [r for r in runs if r.method == "full"]
    pairs = []
    for lora in (r for r in runs if r.method == "lora"):
        same_base = [f for f in fulls if f.model == lora.model] or (fulls if len(fulls) == 1 else [])
        pairs.extend((full, lora) for full in same_base)
    return pairs


def comparison_table(comparisons: Sequence[Comparison], title: str, n_resamples: int) -> Table:
    rows = []
    for c in comparisons:
        relative = f"{100 * c.relative:+.1f}%" if c.relative is not None else DASH
        p = f"< {1 / n_resamples:.3f}" if c.p_value == 0 else f"{c.p_value:.3f}"
        rows.append(
            [
                f"{c.b} vs {c.a}",
                label(c.metric),
                pts(c.mean_a),
                pts(c.mean_b),
                pts(c.diff, signed=True),
                f"[{pts(c.ci_low, True)}, {pts(c.ci_high, True)}]",
                relative,
                p,
                "yes" if c.significant else "no",
                str(c.n),
            ]
        )
    return Table(
        ["Comparison", "Metric", "A", "B", "\u0394 points", "95% CI", "relative", "p", "significant", "n"],
        rows,
        title=title,
        align=["l", "l"] + ["r"] * 8,
        note=f"B minus A in ROUGE points; paired bootstrap over the dialogues both scored ({n_resamples} "
        "resamples). Significant: the 95% interval excludes 0.",
    )


def cost_table(runs: Sequence[RunSummary]) -> Table:
    """What each model cost to make and to run; a dash where the run did not record it."""
    rows = []
    for run in runs:
        train = run.training
        total = run.total_params
        trainable = run.trainable_params
        share = f" ({100 * trainable / total:.2f}%)" if total else ""
        tokens_per_s = (
            train.get("train.tokens_per_s", "train.tokens_per_second", "tokens_per_second") if train else None
        )
        rows.append(
            [
                run.display_name,
                run.method,
                human_count(total),
                human_count(trainable) + share,
                human_bytes(train.weights_size_bytes) if train else DASH,
                human_seconds(train.get("wall_time_s", "train_wall_time_s")) if train else DASH,
                f"{train.get('peak_memory_mb'):.0f} MiB" if train and train.get("peak_memory_mb") else DASH,
                f"{tokens_per_s:,.0f}" if tokens_per_s else DASH,
                _seconds_per_dialogue(run),
                f"{run.metadata['peak_memory_mb']:.0f} MiB" if run.metadata.get("peak_memory_mb") else DASH,
            ]
        )
    return Table(
        [
            "Model",
            "Method",
            "Total params",
            "Trainable params (%)",
            "Adapter/model on disk",
            "Train wall time",
            "Train peak memory",
            "Train tokens/s",
            "Generation s/dialogue",
            "Eval peak memory",
        ],
        rows,
        align=["l", "l"] + ["r"] * 8,
        note="Trainable: parameters the fine-tuning updated (0 for zero-shot). On disk: the saved "
        "adapter or model folder. Generation time: greedy/beam decoding of the evaluation split.",
    )


def _seconds_per_dialogue(run: RunSummary) -> str:
    value = lookup(run.metadata, "generation_stats.seconds_per_dialogue") or lookup(
        run.metrics, "generation.seconds_per_dialogue"
    )
    return f"{value:.2f} s" if value is not None else DASH
