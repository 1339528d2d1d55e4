"""``dialogtune merge --model M --adapter DIR --output DIR``: fold a LoRA adapter into its base.

The merged model (W + B·A·alpha/r in every adapted layer) is a plain transformers model:
it needs no PEFT at inference and generates what base + adapter generates. It is saved as
safetensors + tokenizer, built under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dialogtune.cli.model_args import add_model_args


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, adapter=False)
    parser.add_argument("--adapter", required=True, help="LoRA adapter directory (made by dialogtune train)")
    parser.add_argument("--output", required=True, help="directory to write the merged model to")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.errors import ConfigError
    from dialogtune.io import atomic_dir
    from dialogtune.models.adapters import merge_adapter
    from dialogtune.models.loading import load_model
    from dialogtune.models.params import count_parameters

    output = Path(args.output).resolve()
    if output == Path(args.adapter).resolve():
        raise ConfigError("--output must differ from --adapter (the adapter would be replaced)")
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, adapter=args.adapter)
    merged = merge_adapter(loaded)
    with atomic_dir(output) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))
    counts = count_parameters(merged)
    note = " (RANDOM WEIGHTS base)" if loaded.spec.is_random else ""
    print(f"merged {args.adapter} into {loaded.spec.raw}{note}: {counts['total']:,} parameters -> {output}")
    return 0
