"""``dialogtune train CONFIG.yaml [--set key=value ...]``: fine-tuning with any method
(full, LoRA, DoRA, IA3, prompt tuning: :mod:`dialogtune.methods`).

Runs unchanged under ``torchrun --nproc_per_node N -m dialogtune train ...`` or
``accelerate launch -m dialogtune train ...`` (DDP); see docs/training.md.
"""

from __future__ import annotations

import argparse
import json

from dialogtune.cli.common import add_set_argument
from dialogtune.methods import method_names


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.yaml", help="training config (see configs/)")
    add_set_argument(
        parser, f"training.learning_rate=2e-4 or method=ia3 (methods: {', '.join(method_names())})"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir from its newest complete checkpoint",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit (validates it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.training.config import load_config

    config = load_config(args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    from dialogtune.training.recipe import train

    if args.no_progress:  # also transformers' own bars (e.g. "Writing model shards" at each save)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    result = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if result.metadata:  # only the main process writes and reports
        meta = result.metadata
        print(f"run directory: {result.run_dir}" + (" (RANDOM WEIGHTS)" if result.loaded.random_init else ""))
        print(
            json.dumps(
                {"train": meta["train"], "best": meta["best"], "last_eval": meta["last_eval"]}, default=str
            )
        )
    return 0
