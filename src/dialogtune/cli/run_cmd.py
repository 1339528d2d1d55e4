"""``dialogtune run``: a whole experiment (baseline + variants -> train -> evaluate -> report)."""

from __future__ import annotations

import argparse

from dialogtune.cli.common import add_set_argument


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment config (see experiments/)")
    add_set_argument(
        parser, "evaluation.data.limit=20 or variants.lora.set.lora.r=8 (list items by index or name)"
    )
    parser.add_argument(
        "--force", action="store_true", help="rerun every stage even when a finished one matches"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the config and print it resolved; run nothing"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.experiments import load_experiment

    experiment = load_experiment(args.experiment, args.overrides)
    if args.dry_run:
        import yaml

        from dialogtune.experiments.runner import check_training_configs

        configs = check_training_configs(experiment)  # they must load too; nothing printed if not
        print(yaml.safe_dump(experiment.to_dict(), sort_keys=False, allow_unicode=True), end="")
        for name, config in configs.items():
            print(f"# {name}: {config.method} on {config.model}, training config valid")
        return 0
    from dialogtune.experiments import run_experiment

    result = run_experiment(experiment, force=args.force)
    for stage in result.stages:
        status = "reused" if stage.reused else f"ran in {stage.seconds:.0f} s"
        print(f"{stage.kind:<5} {stage.name:<24} {status}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"report: {result.report['markdown']}")
    print(f"html:   {result.report['html']}")
    return 0
