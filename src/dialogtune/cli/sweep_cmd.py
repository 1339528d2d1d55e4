"""``dialogtune sweep SWEEP.yaml [--storage URL] [--trials N] [--set key=value ...]``.

Runs trials until the study holds N finished ones; rerun the same command to resume a killed
sweep, or start it on more machines with one ``--storage`` URL to share the work (docs/sweeps.md).
"""

from __future__ import annotations

import argparse

from dialogtune.cli.common import add_set_argument


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file (see sweeps/ and docs/sweeps.md)")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna study storage, e.g. sqlite:///study.db or postgresql://user@host/db "
        "(default: study.db in the sweep folder); workers sharing one URL share the study",
    )
    parser.add_argument(
        "--trials", type=int, metavar="N", help="finished trials the study should hold (default: the file's)"
    )
    add_set_argument(parser, "sampler.seed=1, set.training.max_steps=100 or 'space.lora.r={choice: [8, 16]}'")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the sweep against its base config; train nothing"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="one line per trial; trial output goes to logs/ in the sweep folder",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from dialogtune.errors import DialogtuneError

    if importlib.util.find_spec("optuna") is None:
        raise DialogtuneError("dialogtune sweep needs Optuna: pip install 'dialogtune[sweep]'")
    from dialogtune.sweep import check_sweep, load_sweep

    config = load_sweep(args.sweep, args.overrides)
    if args.dry_run:
        import yaml

        check_sweep(config)
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        print(f"# {len(config.params)} keys searched; every value makes a valid training config")
        return 0
    from dialogtune.sweep import run_sweep

    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = run_sweep(config, storage=args.storage, trials=args.trials, progress=not args.no_progress)
    print(f"{result.stopped}")
    print(f"sweep folder: {result.sweep_dir}  (study in {result.storage})")
    if "best" in result.files:
        print(f"best config:  {result.files['best']}")
    if "markdown" in result.files:
        print(f"report:       {result.files['markdown']}")
        print(f"html:         {result.files['html']}")
    return 0
