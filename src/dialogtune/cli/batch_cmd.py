"""``dialogtune batch``: summarize many dialogues into resumable shards, in-process or on Ray."""

from __future__ import annotations

import argparse
import math
import sys

from dialogtune.cli.common import positive_int
from dialogtune.cli.model_args import add_generation_args, add_model_args, inference_inputs


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0:  # float() takes "nan" and "inf", which Ray cannot
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--input",
        required=True,
        metavar="PATH",
        help="a .jsonl/.json/.parquet/.csv file, a directory of them, or a glob ('data/*.parquet')",
    )
    io.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="job directory: shards/, errors.jsonl, manifest.json; rerun the same command to resume",
    )
    io.add_argument("--id-column", metavar="COL", default="id", help="id column (default: %(default)s)")
    io.add_argument(
        "--dialogue-column", metavar="COL", default="dialogue", help="dialogue column (default: %(default)s)"
    )
    io.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="shard file format")
    io.add_argument(
        "--shard-size",
        type=positive_int,
        default=256,
        metavar="N",
        help="input rows per shard, the unit of resuming and of one model call (default: %(default)s)",
    )
    io.add_argument("--limit", type=positive_int, metavar="N", help="only the first N input rows")
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: one model in this process; ray: Ray Data actors (pip install -e '.[scale]')",
    )
    engine.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="a running Ray cluster (auto, ray://HOST:10001); default: $RAY_ADDRESS, else a local cluster",
    )
    engine.add_argument(
        "--num-workers",
        type=positive_int,
        metavar="N",
        help="Ray actors, one model each (default: CPUs (or GPUs) / the per-worker share)",
    )
    engine.add_argument(
        "--threads-per-worker",
        type=positive_int,
        metavar="T",
        help="torch threads (and Ray CPUs) per model (default: 1 on Ray, torch's default locally)",
    )
    engine.add_argument(
        "--gpus-per-worker",
        type=_non_negative_float,
        default=0.0,
        metavar="G",
        help="GPUs per Ray actor, e.g. 1 (default: 0, CPU actors)",
    )
    add_model_args(parser)
    add_generation_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.batch import BatchConfig, ModelJob, run_batch

    settings, template = inference_inputs(args)  # flags, else the adapter's saved contract
    job = ModelJob(
        model=args.model,
        adapter=args.adapter,
        merge=args.merge,
        device=args.device,
        generation=settings,
        prompt=template,
    )
    config = BatchConfig(
        input=args.input,
        output=args.output,
        job=job,
        engine=args.engine,
        ray_address=args.ray_address,
        num_workers=args.num_workers,
        threads_per_worker=args.threads_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        shard_size=args.shard_size,
        limit=args.limit,
        output_format=args.format,
        id_column=args.id_column,
        dialogue_column=args.dialogue_column,
    )
    report = run_batch(config)
    if report.random_weights:
        print(
            f"dialogtune: note: {args.model} has RANDOM WEIGHTS: the summaries mean nothing", file=sys.stderr
        )
    skipped = f" ({report.shards_skipped} already done, skipped)" if report.shards_skipped else ""
    print(f"{report.shards} shards in {report.output}/shards{skipped}: {report.summaries} summaries")
    if report.errors:
        print(f"{report.errors} bad rows (not summarized) listed in {report.output}/errors.jsonl")
    print(report.final_line())
    return 0
