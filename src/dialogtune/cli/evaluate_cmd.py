"""``dialogtune evaluate``: generate on a split, score with ROUGE (+CIs), write a run directory.

With ``--endpoint URL`` the summaries come from a model served behind an OpenAI-compatible
API (``dialogtune serve``, vLLM) instead of a local one; see docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dialogtune.cli.common import add_data_args, data_config_from_args, positive_int, resamples_int
from dialogtune.cli.fields import add_fields, given_values
from dialogtune.cli.model_args import (
    add_generation_args,
    add_model_args,
    inference_inputs,
    load_inference_model,
)
from dialogtune.evaluation.rouge import LSUM_SPLITS, RougeSettings
from dialogtune.experiments.config import EvaluationSpec

# Set from the other flag groups (--data ..., generation and prompt flags; --seed also seeds the bootstrap).
_NOT_FLAGS = ("data", "generation", "prompt", "rouge", "seed", "device")


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_data_args(parser)
    add_generation_args(parser)
    group = parser.add_argument_group("scoring")
    add_fields(
        group,
        RougeSettings,
        prefix="rouge_",
        skip=("rouge_types", "multi_reference"),
        flags={"use_stemmer": "--no-stemmer"},
        choices={"lsum_split": LSUM_SPLITS},
    )
    add_fields(group, EvaluationSpec, prefix="spec_", skip=_NOT_FLAGS, types_={"n_resamples": resamples_int})
    remote = parser.add_argument_group(
        "endpoint (summaries from a served model; --model and --adapter then only give the tokenizer "
        "and the prompt)"
    )
    remote.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="an OpenAI-compatible API's base URL, e.g. http://127.0.0.1:8000/v1 (dialogtune serve, "
        "vLLM): each prompt's token ids go to URL/completions, greedy",
    )
    remote.add_argument(
        "--endpoint-model",
        metavar="NAME",
        default=None,
        help="the model's name on the endpoint (an adapter's served name); default: --model, "
        "required with --adapter",
    )
    remote.add_argument(
        "--endpoint-key-env",
        metavar="VAR",
        default=None,
        help="environment variable holding the endpoint's API key (sent as a bearer token)",
    )
    remote.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
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
    from dialogtune.experiments.evaluate import evaluate_to_dir, format_metrics

    settings, template = inference_inputs(args)
    spec = EvaluationSpec(
        data=data_config_from_args(args),
        generation=settings,
        prompt=template,
        rouge=RougeSettings(**given_values(args, RougeSettings, prefix="rouge_")),
        seed=args.seed,
        device=args.device,
        **given_values(args, EvaluationSpec, prefix="spec_"),
    )
    records = load_records(spec.data, require_references=True)
    loaded = endpoint_model(args) if args.endpoint else load_inference_model(args, settings)
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
        if args.endpoint:
            print(f"served by: {args.endpoint} as '{loaded.endpoint.model}'")
        print(format_metrics(metrics))
        print(f"run directory: {args.output_dir}")
    return 0


def endpoint_model(args: argparse.Namespace):  # -> EndpointModel
    """The model behind ``--endpoint``, checked to be served there (one line if not)."""
    from dialogtune.errors import ConfigError
    from dialogtune.experiments.endpoint import Endpoint, EndpointModel

    if args.endpoint_model is None and args.adapter:
        raise ConfigError(
            "--endpoint with --adapter: name the adapter as the endpoint serves it (--endpoint-model)"
        )
    key = None
    if args.endpoint_key_env:
        key = os.environ.get(args.endpoint_key_env)
        if not key:
            raise ConfigError(
                f"--endpoint-key-env {args.endpoint_key_env}: that environment variable is not set"
            )
    endpoint = Endpoint(
        url=args.endpoint,
        model=args.endpoint_model or args.model,
        api_key=key,
        concurrency=args.concurrency,
    )
    model = EndpointModel(args.model, args.adapter, endpoint)
    model.check()
    return model
