"""Write the base model a dialogtune adapter was trained on as a plain transformers folder for vLLM.

vLLM must serve the *same* base weights the adapter was trained on. For the embedded
``smollm2-135m-instruct`` those are the de-quantised weights of its Q4_1 GGUF file, not
the original ``HuggingFaceTB/SmolLM2-135M-Instruct`` checkpoint: an adapter on the wrong
base still loads, and quietly gives other summaries. This script loads the model exactly
as dialogtune does and saves it (safetensors, tokenizer and chat template included).

    python examples/vllm/export_base.py --model smollm2-135m-instruct --output models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse

from dialogtune.io import atomic_dir
from dialogtune.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="the --model the adapter was trained on"
    )
    parser.add_argument("--output", required=True, help="folder to write (replaced atomically if it exists)")
    parser.add_argument("--dtype", default="fp32", help="fp32 (as trained on CPU) or bf16 (half the size)")
    args = parser.parse_args()
    loaded = load_model(args.model, dtype=args.dtype, device="cpu")
    if loaded.spec.is_random:
        raise SystemExit(f"{args.model} has random weights; export a real model")
    with atomic_dir(args.output) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
    print(
        f"wrote {args.output} ({loaded.model.config.model_type}, {args.dtype}); serve it with examples/vllm/serve.sh"
    )


if __name__ == "__main__":
    main()
