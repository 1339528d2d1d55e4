"""``dialogtune evaluate``: generate on a split, score with ROUGE (+CIs), write a run directory."""

from __future__ import annotations

import argparse
import json
import sys

from dialogtune.cli.common import add_data_args, data_config_from_args, resamples_int
from dialogtune.cli.model_args import (
    add_generation_args,
    add_model_args,
    inference_inputs,
    load_inference_model,
)


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_data_args(parser)
    add_generation_args(parser)
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--lsum-split",
        choices=["sentences", "newline", "none"],
        default="sentences",
        help="how texts are split into lines for rougeLsum (default: %(default)s)",
    )
    group.add_argument("--no-stemmer", action="store_true", help="disable the Porter stemmer")
    group.add_argument("--n-resamples", type=resamples_int, default=1000, help="bootstrap resamples for CIs")
    parser.add_argument("--output-dir", required=True, help="run directory to write")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an evaluation of another model, adapter, data or settings in --output-dir",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics object as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.data import load_records
    from dialogtune.evaluation.rouge import RougeSettings
    from dialogtune.evaluation.run import EvaluationSpec, evaluate_to_dir, format_metrics

    settings, template = inference_inputs(args)
    spec = EvaluationSpec(
        data=data_config_from_args(args),
        generation=settings,
        prompt=template,
        rouge=RougeSettings(use_stemmer=not args.no_stemmer, lsum_split=args.lsum_split),
        n_resamples=args.n_resamples,
        seed=args.seed,
    )
    records = load_records(spec.data, require_references=True)
    loaded = load_inference_model(args, settings)
    metrics = evaluate_to_dir(loaded, records, spec, args.output_dir, overwrite=args.overwrite)
    if metrics.get("reused"):
        print(
            f"{args.output_dir} already holds this evaluation (same weights, data and settings); "
            "reusing it (delete the folder to run it again)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        print(f"model: {loaded.spec.display_name}" + (f" + adapter {args.adapter}" if args.adapter else ""))
        print(format_metrics(metrics))
        print(f"run directory: {args.output_dir}")
    return 0
