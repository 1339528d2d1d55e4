"""Argument helpers shared by verbs (data, generate, evaluate, ...).

Help texts come from the :class:`DataConfig` field metadata, so the flags and the YAML
keys cannot drift apart.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from dataclasses import fields

from dialogtune.data.config import DataConfig
from dialogtune.errors import ConfigError
from dialogtune.seeds import seed_problem

_HELP = {f.name: str(f.metadata.get("help", "")).replace("%", "%%") for f in fields(DataConfig)}
_DEFAULTS = DataConfig()


def add_set_argument(parser: argparse.ArgumentParser, examples: str) -> None:
    """``--set KEY=VALUE`` (repeatable, into ``args.overrides``): the one override flag of
    ``train``, ``run`` and ``sweep``, all parsed by :func:`dialogtune.config.apply_overrides`'s
    YAML 1.2 rules; ``examples`` names keys of the verb's own file."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a key, e.g. {examples}; values are YAML 1.2; repeatable",
    )


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts: a usage error (exit 2) instead of a later config error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def resamples_int(text: str) -> int:
    """argparse ``type=`` for bootstrap resamples: 1 to ``MAX_RESAMPLES``."""
    from dialogtune.evaluation.bootstrap import MAX_RESAMPLES

    value = positive_int(text)
    if value > MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_RESAMPLES:,} resamples, got {value:,}")
    return value


def seed_int(text: str) -> int:
    """argparse ``type=`` for seeds: 0 <= seed < 2**32, what numpy accepts (see :mod:`dialogtune.seeds`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got '{text}'") from None
    problem = seed_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"a seed {problem}")
    return value


def port_number(text: str) -> int:
    """argparse ``type=`` for ``--port`` (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got '{text}'") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value}")
    return value


def check_bindable(host: str, port: int) -> None:
    """Fail with one line now, rather than with uvicorn's log message after loading everything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def add_data_args(parser: argparse.ArgumentParser, default_split: str = "validation") -> None:
    """Add ``--data --split --limit --every --sample --seed`` and the column flags."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", metavar="SRC", default=_DEFAULTS.source, help=_HELP["source"] + " (default: %(default)s)"
    )
    group.add_argument("--split", default=default_split, help=_HELP["split"] + " (default: %(default)s)")
    group.add_argument("--limit", metavar="N", type=positive_int, help=_HELP["limit"])
    group.add_argument("--every", metavar="K", type=positive_int, help=_HELP["every"])
    group.add_argument("--sample", metavar="N", type=positive_int, help=_HELP["sample"])
    group.add_argument(
        "--seed", type=seed_int, default=_DEFAULTS.seed, help=_HELP["seed"] + " (default: %(default)s)"
    )
    group.add_argument("--id-column", metavar="COL", default=_DEFAULTS.id_column, help=_HELP["id_column"])
    group.add_argument(
        "--dialogue-column", metavar="COL", default=_DEFAULTS.dialogue_column, help=_HELP["dialogue_column"]
    )
    group.add_argument("--summary-column", metavar="COL", default=None, help=_HELP["summary_column"])
    group.add_argument(
        "--no-group-by-dialogue",
        dest="group_by_dialogue",
        action="store_false",
        help="keep one record per row even when rows repeat a dialogue",
    )


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The :class:`DataConfig` described by the flags of :func:`add_data_args`."""
    return DataConfig(
        source=args.data,
        split=args.split,
        limit=args.limit,
        every=args.every,
        sample=args.sample,
        seed=args.seed,
        id_column=args.id_column,
        dialogue_column=args.dialogue_column,
        summary_column=args.summary_column,
        group_by_dialogue=getattr(args, "group_by_dialogue", True),
    )
