"""``dialogtune generate``: summaries for a dataset split, written as predictions JSONL."""

from __future__ import annotations

import argparse

from dialogtune.cli.common import add_data_args, data_config_from_args
from dialogtune.cli.model_args import (
    add_generation_args,
    add_model_args,
    inference_inputs,
    load_inference_model,
)
from dialogtune.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_data_args(parser)
    add_generation_args(parser)
    parser.add_argument("--output", required=True, help="predictions JSONL file to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier predictions file at --output"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="ignore outputs of an interrupted earlier run"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.data import load_records
    from dialogtune.data.sources import source_files
    from dialogtune.evaluation.predictions import looks_like_predictions, prediction_row, write_predictions
    from dialogtune.ownership import check_output_file
    from dialogtune.predict import predict_records

    data = data_config_from_args(args)
    settings, template = inference_inputs(args)
    records = load_records(data)
    # Checked before any generation: a bad --output must not cost minutes of work first.
    output = check_output_file(
        args.output,
        what="--output",
        inputs=source_files(data),
        recognise=looks_like_predictions,
        overwrite=args.overwrite,
    )
    partial = output.with_name(output.name + ".partial")
    if partial.is_dir():
        raise ConfigError(f"{partial} is a folder; it is where unfinished predictions are kept")
    loaded = load_inference_model(args, settings)
    if args.no_resume:
        partial.unlink(missing_ok=True)
    predictions, stats = predict_records(loaded, records, settings, template, partial_path=partial)
    write_predictions(output, [prediction_row(r, p) for r, p in zip(records, predictions)])
    partial.unlink(missing_ok=True)
    note = " (RANDOM WEIGHTS)" if loaded.spec.is_random else ""
    print(
        f"wrote {len(records)} predictions to {output}{note}; "
        f"{stats['generation_seconds']:.1f}s, {stats['resumed']} resumed"
    )
    return 0
