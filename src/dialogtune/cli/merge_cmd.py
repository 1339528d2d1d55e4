"""``dialogtune merge --model M --adapter DIR --output DIR``: fold a LoRA adapter into its base.

The merged model (W + B·A·alpha/r in every adapted layer) is a plain transformers model:
it needs no PEFT at inference and generates what base + adapter generates. It is saved as
safetensors + tokenizer, built under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dialogtune.cli.model_args import add_model_args


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, adapter=False, precision="fp32")
    parser.add_argument("--adapter", required=True, help="LoRA adapter directory (made by dialogtune train)")
    parser.add_argument("--output", required=True, help="directory to write the merged model to")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier merge output at --output"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dialogtune.errors import ConfigError
    from dialogtune.io import atomic_dir
    from dialogtune.models.adapters import merge_adapter
    from dialogtune.models.contract import read_contract, write_contract
    from dialogtune.models.loading import load_model
    from dialogtune.models.params import count_parameters
    from dialogtune.models.precision import DTYPES, resolve_precision
    from dialogtune.ownership import MARKER, claim_output_dir, refuse_protected

    output = Path(args.output).expanduser()
    adapter = Path(args.adapter).expanduser().resolve()
    if output.resolve() == adapter or adapter in output.resolve().parents:
        raise ConfigError("--output must not be the adapter folder or inside it")
    # Only an earlier merge output may be replaced, and only with --overwrite; checked before loading.
    output, state = claim_output_dir(output, "merge", overwrite=False, what="--output")
    if state == "ours" and not args.overwrite:
        raise ConfigError(f"--output {output} already holds a merged model; pass --overwrite to replace it")
    if state == "ours":
        refuse_protected(output)
    loaded = load_model(args.model, dtype="fp32", device=args.device, adapter=args.adapter)  # merge in fp32
    merged = merge_adapter(loaded)
    precision = resolve_precision(args.precision, device=loaded.device, model_type=merged.config.model_type)
    merged.to(DTYPES[precision])  # rounded once, after the fp32 merge
    contract = read_contract(adapter)
    with atomic_dir(output) as tmp:  # swapped into place whole: readers never see half a model
        merged.save_pretrained(str(tmp), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))
        if contract is not None:  # the merged model is prompted as its adapter was
            write_contract(tmp, contract)
        (tmp / MARKER).write_text(
            json.dumps({"kind": "merge", "base_model": loaded.spec.raw, "adapter": str(adapter)}) + "\n",
            encoding="utf-8",
        )
    counts = count_parameters(merged)
    note = " (RANDOM WEIGHTS base)" if loaded.spec.is_random else ""
    print(f"merged {args.adapter} into {loaded.spec.raw}{note}: {counts['total']:,} parameters -> {output}")
    return 0
