"""``dialogtune data inspect``: record counts, word/token lengths and truncation rate."""

from __future__ import annotations

import argparse
import json

from dialogtune.cli.common import add_data_args, data_config_from_args, positive_int


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{inspect}", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="counts, length percentiles and truncation rate of a split",
        description="Counts, length percentiles (words; tokens with --model) and truncation rate of a split.",
    )
    add_data_args(inspect)
    inspect.add_argument("--model", metavar="M", help="model spec whose tokenizer measures token lengths")
    inspect.add_argument(
        "--max-length",
        metavar="N",
        type=positive_int,
        default=512,
        help="input token budget; longer inputs count as truncated (default: %(default)s)",
    )
    inspect.add_argument("--json", action="store_true", help="print the statistics as JSON")
    inspect.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.data import format_report, inspect_records, load_records
    from dialogtune.prompts import PromptTemplate

    config = data_config_from_args(args)
    records = load_records(config)
    tokenizer = None
    if args.model:
        from dialogtune.models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    # The notebook template without chat wrapping: what a seq2seq model sees, and a lower
    # bound for chat models (their template adds a few tokens).
    prompt_fn = PromptTemplate().fill if tokenizer is not None else None
    stats = inspect_records(records, tokenizer=tokenizer, max_length=args.max_length, prompt_fn=prompt_fn)
    stats = {"source": config.source, "split": config.split, "model": args.model, **stats}
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        header = f"{config.source} [{config.split}]" + (f", tokenizer of {args.model}" if args.model else "")
        print(header)
        print(format_report(stats))
    return 0
