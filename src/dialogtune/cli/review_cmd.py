"""``dialogtune review``: a blind side-by-side review page, votes in SQLite; and its CSV export.

    dialogtune review RUN_DIR [RUN_DIR ...] --db review.sqlite [--host H] [--port P] [--sample N --seed S]
    dialogtune review export --db review.sqlite --output votes.csv

One parser for both forms: ``export`` as the first positional argument selects the export (a run
directory that happens to be called ``export`` is given as ``./export``). See docs/review.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from dialogtune.cli.common import check_bindable, is_loopback, port_number, positive_int
from dialogtune.errors import ConfigError

_TOKEN_ENV = "DIALOGTUNE_API_TOKEN"  # the same variable as `serve`

USAGE = """dialogtune review RUN_DIR [RUN_DIR ...] --db DB [--host H] [--port P] [--sample N] [--seed S]
                         [--per-rater N] [--token-env VAR]
       dialogtune review export --db DB --output CSV [--overwrite]"""

EPILOG = """examples:
  dialogtune review runs/zero-shot runs/lora --db review.sqlite --sample 20   # open http://127.0.0.1:8010
  dialogtune review export --db review.sqlite --output votes.csv
  dialogtune report runs/zero-shot runs/lora --review review.sqlite --output report/

Run it again with the same --db to continue a review; a database made for other runs is refused."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="evaluation run directories (dialogtune evaluate) or experiment directories (dialogtune run) "
        "that summarised the same dialogues; or the word 'export' (see below)",
    )
    parser.add_argument(
        "--db",
        required=True,
        metavar="DB",
        help="SQLite file holding the review and its votes (created if new)",
    )
    page = parser.add_argument_group("the review page")
    page.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    page.add_argument("--port", type=port_number, default=8010, help="port (default: %(default)s)")
    page.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="review N dialogues drawn at random with --seed (default: all); fixed when the database is made",
    )
    page.add_argument("--seed", type=int, help="seed for the sample, its order and the sides (default: 0)")
    page.add_argument(
        "--per-rater",
        type=positive_int,
        metavar="N",
        help="pairs planned for each rater (default: every dialogue with every model pair)",
    )
    page.add_argument(
        "--token-env",
        default=_TOKEN_ENV,
        metavar="VAR",
        help="environment variable holding a shared access token; unset: no token (default: %(default)s)",
    )
    page.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    export = parser.add_argument_group("dialogtune review export")
    export.add_argument("--output", metavar="CSV", help="write every vote to this CSV file")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.run_dirs[0] == "export":
        if len(args.run_dirs) > 1:
            raise ConfigError(
                "review export takes no run directories: dialogtune review export --db DB --output CSV "
                "(a run directory called 'export' is ./export)"
            )
        if not args.output:
            raise ConfigError("review export needs --output CSV")
        return _export(args)
    if args.output:
        raise ConfigError("--output belongs to `dialogtune review export --db DB --output CSV`")
    return _serve(args)


def _export(args: argparse.Namespace) -> int:
    from dialogtune.review.export import write_votes_csv
    from dialogtune.review.store import ReviewStore

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} exists: choose another --output or add --overwrite")
    n = write_votes_csv(ReviewStore.open(args.db), output)
    print(f"{n} votes -> {output}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from dialogtune.review import ReviewStore, review_set
    from dialogtune.review.app import create_app

    review = review_set(args.run_dirs)
    store = ReviewStore.create_or_open(args.db, review, args.sample, args.seed, args.per_rater)
    token = os.environ.get(args.token_env) or None
    check_bindable(args.host, args.port)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("dialogtune.review")
    if not is_loopback(args.host) and token is None:
        log.warning(
            "listening on %s without a token: anyone who can reach this port can vote (set $%s)",
            args.host,
            args.token_env,
        )
    print(
        f"review: http://{args.host}:{args.port}/ - {len(store.items)} dialogues, {len(store.models)} models "
        f"({', '.join(store.models)}), {store.per_rater} pairs per rater, access token "
        f"{'on' if token else 'off'}; votes in {args.db}",
        flush=True,
    )
    import uvicorn

    uvicorn.run(create_app(store, token), host=args.host, port=args.port, log_level=args.log_level)
    return 0
