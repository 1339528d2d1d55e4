"""``dialogtune score FILE``: ROUGE with bootstrap intervals for an existing predictions file.

Reads our predictions JSONL or any CSV/JSONL table (e.g. the notebook's results CSV, one reference
per row) and prints a table, or with ``--json`` exactly the metrics object
(:mod:`dialogtune.evaluation.metrics`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dialogtune.cli.common import seed_int
from dialogtune.evaluation.rouge import LSUM_SPLITS


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="predictions file: .jsonl or .csv")
    parser.add_argument(
        "--prediction-column",
        metavar="C",
        help="column with the model's summaries (default: the one column named like a prediction)",
    )
    parser.add_argument(
        "--reference-column",
        dest="reference_columns",
        action="append",
        metavar="C",
        help="column with a reference summary; repeat for several references per row "
        "(default: references, reference, summary or human_baseline_summaries)",
    )
    parser.add_argument("--id-column", metavar="C", help="column with example ids (default: id, if present)")
    parser.add_argument(
        "--dialogue-column",
        metavar="C",
        help="rows with the same dialogue and prediction form one example (default: dialogue, if present)",
    )
    parser.add_argument(
        "--lsum-split",
        choices=LSUM_SPLITS,
        default="sentences",
        help="rougeLsum sentence splitting: regex sentences (default), newlines as given, or none (like evaluate)",
    )
    parser.add_argument("--no-stemmer", action="store_true", help="turn off Porter stemming")
    parser.add_argument(
        "--n-resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)"
    )
    parser.add_argument("--seed", type=seed_int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics object as JSON")
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the metrics JSON here (atomically)"
    )
    parser.set_defaults(func=run)


def format_table(metrics: dict[str, Any], rouge_types: list[str]) -> str:
    """A small fixed-width table: type, mean, CI, max over references."""
    confidence = round(100 * metrics["bootstrap"]["confidence"])
    lines = [f"{'type':<10} {'mean':>7}   {f'{confidence}% CI':<17} {'max-over-refs':>13}"]
    for rouge_type in rouge_types:
        row, best = metrics[rouge_type], metrics["max_over_references"][rouge_type]
        interval = f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        lines.append(f"{rouge_type:<10} {row['mean']:>7.4f}   {interval:<17} {best['mean']:>13.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `dialogtune --help` does not load the scoring stack.
    from dialogtune.errors import ConfigError
    from dialogtune.evaluation import RougeSettings, compute_metrics, read_scoring_table
    from dialogtune.evaluation.bootstrap import MAX_RESAMPLES
    from dialogtune.io import write_json

    if not 1 <= args.n_resamples <= MAX_RESAMPLES:
        raise ConfigError(f"--n-resamples: expected 1 to {MAX_RESAMPLES:,}, got {args.n_resamples}")
    settings = RougeSettings(use_stemmer=not args.no_stemmer, lsum_split=args.lsum_split)
    table = read_scoring_table(
        args.file,
        prediction_column=args.prediction_column,
        reference_columns=args.reference_columns,
        id_column=args.id_column,
        dialogue_column=args.dialogue_column,
    )
    metrics, _ = compute_metrics(
        table.predictions, table.references, settings, n_resamples=args.n_resamples, seed=args.seed
    )
    if args.output is not None:
        write_json(args.output, metrics)
    if args.json:
        json.dump(metrics, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print(
        f"{args.file}: {metrics['n']} examples, {metrics['n_references']} references "
        f"(prediction column {table.prediction_column!r}, references {', '.join(table.reference_columns)})"
    )
    print(format_table(metrics, list(settings.rouge_types)))
    print(
        f"F-measure; mean over references per example, then over examples; "
        f"rouge_score {metrics['settings']['implementation_version']}, "
        f"stemmer {'on' if settings.use_stemmer else 'off'}, rougeLsum split: {settings.lsum_split}"
    )
    if args.output is not None:
        print(f"wrote {args.output}")
    return 0
