"""``dialogtune report``: compare evaluation run directories in report.md + report.html + PNGs."""

from __future__ import annotations

import argparse

from dialogtune.cli.common import resamples_int, seed_int


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="evaluation run directories (dialogtune evaluate) or experiment directories "
        "(dialogtune run); the first is the baseline unless --baseline says otherwise",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="directory to write the report into")
    parser.add_argument(
        "--names", nargs="+", metavar="NAME", help="display names, one per run (default: dir names)"
    )
    parser.add_argument("--baseline", metavar="NAME", help="run name to compare every model against")
    parser.add_argument(
        "--split", help="split to report when a run has several (default: test, then validation)"
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=3,
        metavar="N",
        help="side-by-side examples where the models disagree most (default: %(default)s)",
    )
    parser.add_argument(
        "--random-examples",
        type=int,
        default=3,
        metavar="N",
        help="plus a seeded random sample of N examples (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="seed for the random sample and the bootstrap"
    )
    parser.add_argument("--n-resamples", type=resamples_int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--title", default="dialogtune comparison report")
    parser.add_argument(
        "--review",
        metavar="DB",
        help="a `dialogtune review` database: adds win rates, a ranking and agreement from its votes",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.report import ReportOptions, load_runs, write_report

    runs = load_runs(args.run_dirs, names=args.names, split=args.split)
    options = ReportOptions(
        baseline=args.baseline,
        n_disagree=max(0, args.examples),
        n_random=max(0, args.random_examples),
        seed=args.seed,
        n_resamples=args.n_resamples,
        title=args.title,
        review=args.review,
    )
    paths = write_report(runs, args.output, options)
    print(f"report: {paths['markdown']}")
    print(f"html:   {paths['html']}")
    return 0
