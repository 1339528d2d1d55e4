"""The report's "Blind review" section, built from a review database alone.

Human votes and harness votes (an automatic rater that drives the page, see
``dialogtune.review.harness``) are never pooled: each kind gets its own tables, and harness
votes are introduced by a warning that they are not human judgement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dialogtune.report.collect import RunSummary
from dialogtune.report.document import Block, Paragraph, Section, Table
from dialogtune.report.tables import DASH
from dialogtune.review.stats import ReviewStats, summarize
from dialogtune.review.store import FLAGS, RATER_KINDS, ReviewStore

_KIND_TITLE = {"human": "Human votes", "harness": "Harness votes (not human judgement)"}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:+.{digits}f}"


def _kind_blocks(kind: str, stats: ReviewStats, notes: dict[str, str]) -> list[Block]:
    title = _KIND_TITLE[kind]
    blocks: list[Block] = []
    if kind == "harness":
        rules = "; ".join(sorted({n for n in notes.values() if n})) or "not recorded"
        blocks.append(
            Paragraph(
                f"HARNESS VOTES, NOT HUMAN JUDGEMENT: {stats.votes} votes were cast by an automatic rater "
                f"clicking through the review page in a headless browser (rule: {rules}). They show the "
                "page and the statistics at work; they say nothing about what people prefer.",
                "warning",
            )
        )
    else:
        blocks.append(Paragraph(f"{title}: {stats.votes} votes by {stats.raters} rater(s)."))
    blocks.append(
        Table(
            ["Model A", "Model B", "Votes", "A wins", "Ties", "B wins", "A win rate [95% CI]", "Verdict"],
            [
                [
                    p.first,
                    p.second,
                    str(p.n),
                    str(p.first_wins),
                    str(p.ties),
                    str(p.second_wins),
                    f"{_pct(p.rate)} [{_pct(p.ci_low)}, {_pct(p.ci_high)}]",
                    p.verdict,
                ]  # fmt: skip
                for p in stats.pairs
            ],
            title=f"{title}: win / tie / loss per model pair",
            align=["l", "l", "r", "r", "r", "r", "r", "l"],
            note="Win rate: (wins + ties / 2) / votes, with a percentile bootstrap CI over the votes "
            f"({stats.n_resamples} resamples, seed {stats.seed}). A pair differs when the CI excludes 50%.",
        )
    )
    rouge = stats.rouge
    blocks.append(
        Table(
            [
                "Rank",
                "Model",
                "Bradley-Terry score [95% CI]",
                "Rank range (95%)",
                "Mean ROUGE-L (judged dialogues)",
            ],
            [
                [
                    str(r.rank),
                    r.model,
                    f"{r.score:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                    f"{r.rank_low}-{r.rank_high}",
                    f"{100 * rouge.mean_rouge_l[r.model]:.2f}" if rouge else DASH,
                ]  # fmt: skip
                for r in stats.ranking
            ],
            title=f"{title}: Bradley-Terry ranking",
            align=["r", "l", "r", "r", "r"],
            note="Scores are centred log-strengths: exp(score A - score B) is the odds that A beats B. Ties "
            "count half a win each; one virtual tie per model pair keeps scores finite. Intervals: bootstrap "
            "refits over resampled votes.",
        )
    )
    blocks.append(
        Table(
            ["Model", "Summaries judged", *FLAGS.values()],
            [
                [
                    f.model,
                    str(f.judged),
                    *[f"{_pct(f.counts[k] / f.judged)} ({f.counts[k]})" if f.judged else DASH for k in FLAGS],
                ]  # fmt: skip
                for f in stats.flags
            ],
            title=f"{title}: flags per model",
            note="Share of the model's judged summaries that raters flagged (count in brackets).",
        )
    )
    agreement = stats.agreement
    if agreement.raters < 2:
        blocks.append(Paragraph(f"{title}: one rater, so no inter-rater agreement to report."))
    else:
        rows = [[f"{k.a} / {k.b}", str(k.shared), _num(k.kappa)] for k in agreement.pairs]
        rows.append(["all raters (Fleiss)", str(agreement.fleiss_items), _num(agreement.fleiss)])
        blocks.append(
            Table(
                ["Raters", "Comparisons judged by both / by 2+", "Kappa"],
                rows,
                title=f"{title}: agreement between raters",
                note="Cohen's kappa per pair of raters and Fleiss' kappa over all, on the answers first "
                "model better / tie / second model better for the same dialogue and model pair. "
                "1 = perfect agreement, 0 = what chance gives.",
            )
        )
    if rouge is not None:
        share = f" ({_pct(rouge.agree / rouge.decisive)})" if rouge.decisive else ""
        blocks.append(
            Paragraph(
                f"{title} vs ROUGE: Spearman rho {_num(rouge.spearman)}, Kendall tau {_num(rouge.kendall)} "
                f"between the Bradley-Terry scores and mean ROUGE-L over {len(stats.ranking)} models"
                + (
                    " (with two models a rank correlation is only +1 or -1: same order or not)"
                    if len(stats.ranking) == 2
                    else ""
                )  # fmt: skip
                + f"; in {rouge.agree} of {rouge.decisive} decisive votes{share} the preferred summary "
                "also has the higher ROUGE-L against the reference"
                + (" (the harness rule is ROUGE-L itself)." if kind == "harness" else ".")
            )
        )
    return blocks


def review_section(
    db_path: str | Path, runs: Sequence[RunSummary] = (), n_resamples: int = 1000, seed: int = 0
) -> tuple[Section, dict[str, Any]]:
    """The section and its numbers (for ``report.json``) from the review database at ``db_path``."""
    store = ReviewStore.open(db_path)
    votes = store.votes()
    raters = store.raters()
    paths = store.model_paths()
    blocks: list[Block] = [
        Paragraph(
            "Blind pairwise review: raters saw a dialogue and two models' summaries of it, sides shuffled "
            "and model names hidden, chose the better summary (or a tie) and could flag problems. "
            f"{len(store.items)} dialogues (drawn with seed {store.seed}), {len(store.models)} models: "
            f"{', '.join(store.models)}. Database: {db_path}."
        )
    ]
    in_report = {str(Path(r.path).resolve()) for r in runs}
    missing = [name for name, (path, _) in paths.items() if in_report and path not in in_report]
    if missing:
        blocks.append(
            Paragraph(f"The review judged runs that are not in this report: {', '.join(missing)}.", "warning")
        )
    numbers: dict[str, Any] = {
        "database": str(db_path),
        "dialogues": len(store.items),
        "models": store.models,
        "by_kind": {},
    }
    rouge_l = store.rouge_l()
    for kind in RATER_KINDS:
        mine = [v for v in votes if v.kind == kind]
        if not mine:
            continue
        stats = summarize(mine, store.models, rouge_l, n_resamples=n_resamples, seed=seed)
        notes = {name: note for name, (k, note) in raters.items() if k == kind}
        blocks += _kind_blocks(kind, stats, notes)
        numbers["by_kind"][kind] = {**stats.to_dict(), "rater_notes": notes}
    if not votes:
        blocks.append(Paragraph("No votes yet."))
    return Section("Blind review", "review", blocks), numbers
