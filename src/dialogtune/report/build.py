"""Assemble the comparison report from run summaries and write it.

``write_report(runs, output_dir)`` writes ``report.md`` (+ the PNGs it links), a self-contained
``report.html`` and ``report.json`` (the numbers, for scripts). The first run is the baseline
unless ``ReportOptions.baseline`` names another.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dialogtune.errors import ConfigError, DataError
from dialogtune.io import atomic_open, write_json, write_text
from dialogtune.ownership import claim_output_dir, mark
from dialogtune.report import faithfulness as faith
from dialogtune.report import pareto, plots
from dialogtune.report.collect import RunSummary, lookup
from dialogtune.report.document import Document, Image, Paragraph, Preformatted, Section, Table
from dialogtune.report.examples import common_ids, example_blocks
from dialogtune.report.render import render_html, render_markdown
from dialogtune.report.tables import (
    DASH,
    Comparison,
    compare,
    comparison_table,
    cost_table,
    method_full_pairs,
    quantitative_tables,
    rouge_types_of,
)
from dialogtune.seeds import check_seed

# Run-dependent numbers that are not settings: excluded when checking runs used the same settings.
_GENERATION_STATS = {
    "n",
    "resumed",
    "generation_seconds",
    "seconds_per_dialogue",
    "generated_tokens",
    "tokens_per_second",
    "run_key",
}


@dataclass
class ReportOptions:
    baseline: str | None = None  # run name; None: the first run
    n_disagree: int = 3  # side-by-side examples where the models disagree most
    n_random: int = 3  # plus a seeded random sample
    seed: int = 0
    n_resamples: int = 1000  # paired bootstrap resamples
    plot_metric: str = "rouge1"
    title: str = "dialogtune comparison report"
    review: str | Path | None = None  # a `dialogtune review` database: adds the "Blind review" section

    def __post_init__(self) -> None:
        check_seed("report seed", self.seed)


def _same(values: Sequence[Any]) -> bool:
    dumped = [json.dumps(v, sort_keys=True, default=str) for v in values]
    return len(set(dumped)) <= 1


def _generation_settings(run: RunSummary) -> dict[str, Any]:
    settings = run.config.get("generation") or lookup(run.metrics, "generation") or {}
    return {k: v for k, v in settings.items() if k not in _GENERATION_STATS}


def _fingerprint(run: RunSummary) -> str | None:
    return lookup(run.metrics, "data.fingerprint") or run.metadata.get("data_fingerprint")


def _overview(runs: Sequence[RunSummary], baseline: RunSummary) -> Section:
    blocks: list[Any] = []
    random_runs = [r.name for r in runs if r.random_weights]
    if random_runs:
        blocks.append(
            Paragraph(
                f"RANDOM WEIGHTS: {', '.join(random_runs)} use randomly initialised weights (tests "
                "and benchmarks only); their numbers say nothing about pretrained models.",
                "warning",
            )
        )
    if not _same([_fingerprint(r) for r in runs]):
        blocks.append(
            Paragraph(
                "The runs were evaluated on different data (fingerprints differ): paired tests and "
                "examples use only the dialogues they share (same id, dialogue and references).",
                "warning",
            )
        )
    if not _same([_generation_settings(r) for r in runs]):
        blocks.append(
            Paragraph(
                "The runs used different generation settings: differences mix the model and the "
                "decoding. See Settings.",
                "warning",
            )
        )
    if not _same([r.metrics.get("settings") for r in runs]):
        blocks.append(
            Paragraph("The runs used different ROUGE settings: their scores are not comparable.", "warning")
        )
    shared = len(common_ids(runs))
    blocks.append(
        Paragraph(
            f"{len(runs)} models on the '{runs[0].split}' split of "
            f"{lookup(runs[0].metrics, 'data.source') or '?'}; {shared} dialogues scored by every "
            f"model. Baseline: {baseline.name}."
        )
    )
    rows = [[r.display_name, r.method, r.model, str(r.path)] for r in runs]
    blocks.append(Table(["Model", "Method", "Base model", "Run directory"], rows, align=["l"] * 4))
    return Section("Overview", "overview", blocks)


def _comparisons(
    runs: Sequence[RunSummary], baseline: RunSummary, opts: ReportOptions
) -> tuple[Section, list[Comparison]]:
    types = rouge_types_of(runs)
    vs_base = [
        c for r in runs if r is not baseline for c in compare(baseline, r, types, opts.n_resamples, opts.seed)
    ]
    blocks: list[Any] = []
    if vs_base:
        blocks.append(
            comparison_table(vs_base, f"Each model vs the baseline ({baseline.name})", opts.n_resamples)
        )
    else:
        blocks.append(
            Paragraph("Only one model (or no shared dialogues): nothing to compare against the baseline.")
        )
    pairs = method_full_pairs(runs)
    vs_full = [c for full, run in pairs for c in compare(full, run, types, opts.n_resamples, opts.seed)]
    if vs_full:
        blocks.append(
            comparison_table(
                vs_full,
                "Each parameter-efficient method vs full fine-tuning (positive: the method better)",
                opts.n_resamples,
            )
        )
    else:
        blocks.append(
            Paragraph(
                "Parameter-efficient methods vs full fine-tuning: no pair of an adapter run (LoRA, DoRA, "
                "IA3, prompt tuning) and a full fine-tuning run of the same base model among these runs."
            )
        )
    return Section("Improvement", "improvement", blocks), vs_base + vs_full


def _pareto(points: Sequence[pareto.ParetoPoint], metric: str) -> list[Section]:
    """The quality-vs-cost section, when at least two fine-tuned models can be compared."""
    if sum(1 for p in points if not p.zero_shot) < 2:
        return []
    optimal = [p.name for p in points if not p.dominated_by]
    return [
        Section(
            "Quality against cost",
            "pareto",
            [
                Paragraph(
                    f"Pareto-optimal over all four costs ({pareto.label(metric)} mean): {', '.join(optimal)}. "
                    "Every other model is matched or beaten by one of these at no more cost."
                ),
                pareto.pareto_table(points, metric),
                Image(
                    "pareto.png",
                    plots.pareto_png(points, metric),
                    f"{pareto.label(metric)} against the cost of fine-tuning",
                    "One panel per cost (log scale). Filled: no other model scores at least as well for "
                    "less of that cost; hollow: dominated; the line joins the frontier. Dashed: zero-shot.",
                ),
            ],
        )
    ]


def _faithfulness(runs: Sequence[RunSummary]) -> Section:
    ids = common_ids(runs)
    rows0 = [runs[0].rows_by_id[i] for i in ids]
    dialogue_of = {i: str(r.get("dialogue", "")) for i, r in zip(ids, rows0)}
    # Each human reference counts as one summary: the calibration line for the heuristic and the lengths.
    ref_pairs = [(i, str(ref)) for i, r in zip(ids, rows0) for ref in r.get("references", [])]
    systems = [("references (human)", [i for i, _ in ref_pairs], [t for _, t in ref_pairs])]
    systems += [
        (r.display_name, ids, [str(r.rows_by_id[i].get("prediction", "")) for i in ids]) for r in runs
    ]
    vocabulary = faith.lowercase_vocabulary(
        list(dialogue_of.values()) + [t for *_, texts in systems for t in texts]
    )
    ref_mean = faith.length_stats(systems[0][2]).mean
    rows, length_rows = [], []
    for name, system_ids, texts in systems:
        stats = faith.faithfulness_stats(
            name, system_ids, texts, [dialogue_of[i] for i in system_ids], vocabulary
        )
        examples = "; ".join(f"{i}: {what}" for i, what in stats.examples) or DASH
        rate = f"{100 * stats.rate:.1f}%"
        rows.append([name, str(stats.n), str(stats.flagged), rate, str(stats.speaker_flagged),
                     str(stats.name_flagged), examples])  # fmt: skip
        n = faith.length_stats(texts)
        ratio = f"{n.mean / ref_mean:.2f}" if ref_mean else DASH
        length_rows.append([name, f"{n.mean:.1f}", f"{n.median:.0f}", str(n.minimum), str(n.maximum),
                            str(n.empty), ratio])  # fmt: skip
    flagged = Table(
        [
            "System",
            "Summaries",
            "Flagged",
            "Rate",
            "Invented speaker",
            "Invented name",
            "Examples (id: what)",
        ],
        rows,
        title="Hallucinated people: speakers and names absent from the dialogue",
        align=["l"] + ["r"] * 5 + ["l"],
        note="A summary is flagged when it names a #PersonN# speaker or a capitalised name that never occurs in its "
        "dialogue (common words, days, months and sentence-initial ordinary words are ignored). The references' "
        "rate shows how often the heuristic fires on human summaries.",
    )
    lengths = Table(
        ["System", "Mean words", "Median", "Min", "Max", "Empty", "Mean / reference mean"],
        length_rows,
        title="Summary length (words)",
    )
    return Section("Faithfulness and length", "faithfulness", [flagged, lengths])


def _settings(runs: Sequence[RunSummary]) -> Section:
    blocks: list[Any] = []
    first = runs[0]
    for title, getter in (
        ("Metric settings", lambda r: r.metrics.get("settings")),
        ("Generation settings", _generation_settings),
        ("Prompt", lambda r: r.config.get("prompt")),
        ("Evaluation data", lambda r: lookup(r.metrics, "data") or r.config.get("data")),
    ):
        values = [getter(r) for r in runs]
        if _same(values):
            blocks += [
                Paragraph(f"{title} (all runs):"),
                Preformatted(yaml.safe_dump(values[0], sort_keys=False)),
            ]
        else:
            for run, value in zip(runs, values):
                blocks += [
                    Paragraph(f"{title} ({run.name}):"),
                    Preformatted(yaml.safe_dump(value, sort_keys=False)),
                ]
    blocks.append(Paragraph(f"Bootstrap: {lookup(first.metrics, 'bootstrap') or DASH}."))
    version_keys = ["dialogtune", "torch", "transformers", "peft", "rouge-score"]
    rows = [
        [
            r.name,
            str(_fingerprint(r) or DASH),
            *[str(lookup(r.metadata, f"versions.{k}") or DASH) for k in version_keys],
            str(r.metadata.get("git_commit") or DASH),
            str(r.metadata.get("created") or DASH),
        ]
        for r in runs
    ]
    blocks.append(
        Table(
            ["Run", "Data fingerprint", *version_keys, "git commit", "created"],
            rows,
            title="Data fingerprints and versions",
            align=["l"] * (len(version_keys) + 5),
        )
    )
    for run in (r for r in runs if r.training is not None):
        blocks += [
            Paragraph(f"Training config of {run.name} ({run.training.path}):"),
            Preformatted(yaml.safe_dump(run.training.config, sort_keys=False)),
        ]
    return Section("Settings, data and versions", "settings", blocks)


def build_document(
    runs: Sequence[RunSummary], options: ReportOptions | None = None
) -> tuple[Document, dict[str, Any]]:
    """The report document and its machine-readable numbers."""
    opts = options or ReportOptions()
    if not runs:
        raise DataError("no runs to report on")
    names = [r.name for r in runs]
    if opts.baseline is not None and opts.baseline not in names:
        raise ConfigError(f"baseline '{opts.baseline}' is not one of the runs: {', '.join(names)}")
    baseline = runs[names.index(opts.baseline)] if opts.baseline else runs[0]
    if not common_ids(runs):
        raise DataError("the runs share no dialogue ids: nothing can be compared side by side")
    comparisons_section, comparisons = _comparisons(runs, baseline, opts)
    points = pareto.pareto_points(runs, opts.plot_metric)
    review: list[Section] = []
    review_numbers = None
    if opts.review is not None:
        from dialogtune.review.report import review_section

        section, review_numbers = review_section(opts.review, runs, opts.n_resamples, opts.seed)
        review = [section]
    doc = Document(
        title=opts.title + (" (RANDOM WEIGHTS)" if any(r.random_weights for r in runs) else ""),
        subtitle=f"Models: {', '.join(r.display_name for r in runs)}",
    )
    doc.sections = [
        _overview(runs, baseline),
        Section("Quantitative results", "quantitative", list(quantitative_tables(runs))),
        comparisons_section,
        Section("Cost", "cost", [cost_table(runs)]),
        *_pareto(points, opts.plot_metric),
        Section(
            "Plots",
            "plots",
            [
                Image(
                    "rouge.png",
                    plots.rouge_bars_png(runs),
                    "ROUGE per model with 95% confidence intervals",
                    "Bars: mean F-measure x100; whiskers: 95% bootstrap interval. Hatched: random weights.",
                ),
                Image(
                    "quality_vs_params.png",
                    plots.quality_vs_params_png(runs, opts.plot_metric),
                    "Quality against trainable parameters",
                    "Dashed lines: zero-shot models (nothing trained).",
                ),
            ],
        ),
        _faithfulness(runs),
        *review,
        Section(
            "Qualitative examples",
            "examples",
            list(example_blocks(runs, opts.n_disagree, opts.n_random, opts.seed)),
        ),
        _settings(runs),
    ]
    numbers = {
        "baseline": baseline.name,
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "method": r.method,
                "model": r.model,
                "random_weights": r.random_weights,
                "split": r.split,
                "n": r.metrics.get("n"),
                "total_params": r.total_params,
                "trainable_params": r.trainable_params,
                "metrics": {t: r.metrics.get(t) for t in rouge_types_of(runs)},
                "max_over_references": r.metrics.get("max_over_references"),
            }
            for r in runs
        ],
        "comparisons": [dataclasses.asdict(c) for c in comparisons],
        "pareto": {"metric": opts.plot_metric, "points": pareto.to_json(points)},
    }
    if review_numbers is not None:
        numbers["review"] = review_numbers
    return doc, numbers


def write_report(
    runs: Sequence[RunSummary], output_dir: str | Path, options: ReportOptions | None = None
) -> dict[str, Path]:
    """Write report.md, report.html, report.json and the PNGs into ``output_dir``; returns the paths."""
    # A report folder is regenerated in place; a folder holding anything else is never written into.
    out, _ = claim_output_dir(output_dir, "report", overwrite=False, what="report folder")
    doc, numbers = build_document(runs, options)
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "report")
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    for image in doc.images():
        target = out / image.filename
        with atomic_open(target, "wb") as handle:
            handle.write(image.png)
        paths[image.filename] = target
    write_text(paths["markdown"], render_markdown(doc))
    write_text(paths["html"], render_html(doc))
    write_json(paths["json"], numbers)
    return paths
