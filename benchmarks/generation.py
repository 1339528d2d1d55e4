"""Per-example generation (the notebook's loop) vs dialogtune's batched, length-sorted generation.

Same model, same validation dialogues, same greedy settings, in one run. Writes
``benchmarks/results/generation.json`` with both times, the ratio and how many
outputs were identical.

    python benchmarks/generation.py [--model smollm2-135m-instruct] [--n 32] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import read_split, save  # noqa: E402

from dialogtune.generation import GenerationSettings, build_prompts, generate  # noqa: E402
from dialogtune.models import load_model  # noqa: E402
from dialogtune.prompts import PromptTemplate  # noqa: E402


def notebook_loop(loaded, dialogues: list[str], max_new_tokens: int, max_dialogue_tokens: int) -> list[str]:
    """One dialogue at a time: tokenize, generate, decode (the notebook's cell, same prompt)."""
    prompts = build_prompts(loaded, dialogues, PromptTemplate(), max_dialogue_tokens)
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([loaded.kind.encode_prompts(loaded.tokenizer, [prompt])[0]])
            out = loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            outputs.append(loaded.kind.decode_generated(loaded.tokenizer, out, ids.shape[1])[0])
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--max-dialogue-tokens", type=int, default=1024)
    args = parser.parse_args()

    loaded = load_model(args.model)
    dialogues = [row["dialogue"] for row in read_split("validation", args.n)]
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        max_dialogue_tokens=args.max_dialogue_tokens,
    )
    generate(loaded, dialogues[:2], GenerationSettings(max_new_tokens=4), progress=False)  # warm-up

    start = time.perf_counter()
    naive = notebook_loop(loaded, dialogues, args.max_new_tokens, args.max_dialogue_tokens)
    naive_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = generate(loaded, dialogues, settings, progress=False).texts
    batched_s = time.perf_counter() - start

    identical = sum(a == b for a, b in zip(naive, batched))
    result = {
        "model": loaded.spec.display_name,
        "n_dialogues": len(dialogues),
        "settings": settings.to_dict(),
        "per_example_seconds": round(naive_s, 2),
        "batched_seconds": round(batched_s, 2),
        "speedup": round(naive_s / batched_s, 2),
        "identical_outputs": identical,
        "all_identical": identical == len(dialogues),
        "differing_examples": [i for i, (a, b) in enumerate(zip(naive, batched)) if a != b],
    }
    path = save("generation", result)
    print(
        f"per-example {naive_s:.1f}s, batched {batched_s:.1f}s: {result['speedup']}x; "
        f"identical {identical}/{len(dialogues)} -> {path}"
    )


if __name__ == "__main__":
    main()
