"""``dialogtune params``: total / trainable parameters, full or LoRA."""

from __future__ import annotations

import argparse
import json

from dialogtune.cli.model_args import add_model_args


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, adapter=False)
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument(
        "--target-modules",
        default=None,
        help="comma-separated module names or all-linear (default: per model family)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.models.loading import load_model
    from dialogtune.models.lora import LoraSettings, apply_lora
    from dialogtune.models.params import count_parameters, format_parameters

    lora = None
    if args.method == "lora":  # validate the flags before spending time on loading
        lora = LoraSettings(
            r=args.lora_r,
            alpha=args.lora_alpha,
            dropout=args.lora_dropout,
            target_modules=args.target_modules,
        )
    # random: models are built on the meta device: counting needs shapes, not values.
    loaded = load_model(
        args.model, dtype=args.precision, device=args.device, empty_weights=args.model.startswith("random:")
    )
    model = loaded.model
    if lora is not None:
        model = apply_lora(model, lora)
    counts = count_parameters(model)
    result = {
        **counts,
        "model": loaded.spec.raw,
        "random_weights": loaded.spec.is_random,
        "kind": loaded.kind.name,
        "method": args.method,
    }
    if lora is not None:
        result["lora"] = {**lora.to_dict(), "target_modules": lora.resolved_targets(model.config.model_type)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model: {loaded.spec.display_name} ({loaded.kind.name}), method: {args.method}")
        print(format_parameters(counts))
    return 0
