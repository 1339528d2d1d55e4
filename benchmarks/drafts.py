"""Draft tokens for requests that arrive one at a time: none, copied from the request's own text
(prompt lookup), and also from the model's recent outputs (``generation.draft_memory``).

A server at low load decodes one request at a time: a step of one sequence is bound by reading
the weights, so extra draft rows are almost free and every accepted draft token saves a step.
Each side is one ragged engine that first answers ``--warm`` validation dialogues (a batch, as a
server's earlier traffic: what the memory may copy from), then ``--n`` other dialogues one after
another, each on its own, timed. The sides take turns per dialogue over ``--rounds`` rounds (the
second round in reverse order), so a slow spell of the machine hits them all alike. Every side
must give the same tokens as the side without drafts (they are checked, and counted).

    python benchmarks/drafts.py [--adapter DIR] [--n 16] [--warm 40] [--rounds 2]
        [--max-new-tokens 64] [--threads 1]

With ``--adapter`` the adapter is merged for inference (as ``evaluate`` does) and prompted as
it was trained (its ``dialogtune_inference.json``). Writes ``benchmarks/results/drafts.json`` or
``drafts-adapter.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_split, save  # noqa: E402

# (name, lookahead, draft_memory): the first is the baseline every ratio is against.
SIDES = [
    ("no drafts", 0, 0),
    ("own text, 2 tokens (before recent outputs)", 2, 0),
    ("own text + recent outputs, 2 tokens (batch jobs' default)", 2, 64),
    ("own text + recent outputs, 3 tokens (the server's default)", 3, 64),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--warm", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dialogtune.generation import GenerationSettings, build_prompts
    from dialogtune.generation.engine import RaggedEngine, make_request
    from dialogtune.generation.run import stop_ids
    from dialogtune.models.contract import contract_for
    from dialogtune.models.inference import load_for_inference
    from dialogtune.prompts import PromptTemplate

    contract = contract_for(args.model, args.adapter)
    template = contract.prompt if contract is not None else PromptTemplate()
    longest = (contract.max_dialogue_tokens if contract is not None else None) or 512
    loaded = load_for_inference(args.model, adapter=args.adapter, precision="auto")
    rows = read_split("validation", args.warm + args.n)
    texts = build_prompts(loaded, [r["dialogue"] for r in rows], template, longest)
    prompts = loaded.kind.encode_prompts(loaded.tokenizer, texts)
    warm, test = prompts[: args.warm], prompts[args.warm :]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    stops = stop_ids(loaded)

    engines = []
    for _, lookahead, memory in SIDES:
        engine = RaggedEngine(loaded.model, stops, slots=16, lookahead=lookahead, draft_memory=memory)
        engine.run([make_request(i, p, settings) for i, p in enumerate(warm)])
        engines.append(engine)
    seconds = [0.0] * len(SIDES)
    steps = [0] * len(SIDES)
    tokens: list[list[list[int]]] = [[] for _ in SIDES]
    for round_ in range(args.rounds):
        for i, prompt in enumerate(test):
            order = range(len(SIDES)) if round_ % 2 == 0 else reversed(range(len(SIDES)))
            for side in order:
                engine, request = engines[side], make_request(i, prompt, settings)
                before = engine.steps
                start = time.perf_counter()
                engine.run([request])
                seconds[side] += time.perf_counter() - start
                steps[side] += engine.steps - before
                if round_ == 0:
                    tokens[side].append(request.tokens)
    generated = args.rounds * sum(len(t) for t in tokens[0])
    result_sides = []
    for side, (name, lookahead, memory) in enumerate(SIDES):
        identical = sum(a == b for a, b in zip(tokens[side], tokens[0]))
        result_sides.append(
            {
                "side": name,
                "lookahead": lookahead,
                "draft_memory": memory,
                "seconds": round(seconds[side], 2),
                "speed_vs_no_drafts": round(seconds[0] / seconds[side], 3),
                "speed_vs_own_text": round(seconds[1] / seconds[side], 3),
                "decode_steps": steps[side],
                "tokens_per_step": round(generated / steps[side], 3),
                "identical_to_no_drafts": f"{identical} / {len(test)}",
            }
        )
        print(
            f"{name:60s} {seconds[side]:7.2f} s  {seconds[0] / seconds[side]:.2f}x no drafts  "
            f"{seconds[1] / seconds[side]:.2f}x own text  {generated / steps[side]:.2f} tokens/step  "
            f"identical {identical}/{len(test)}",
            flush=True,
        )
        if identical != len(test):
            raise SystemExit(f"{name}: drafts changed {len(test) - identical} outputs")
    result: dict[str, Any] = {
        "benchmark": "drafts",
        "model": args.model,
        "adapter": args.adapter,
        "precision": loaded.precision,
        "settings": {
            "n": args.n,
            "warm": args.warm,
            "rounds": args.rounds,
            "max_new_tokens": args.max_new_tokens,
            "threads": args.threads,
            "generated_tokens": generated,
        },
        "sides": result_sides,
    }
    print("wrote", save("drafts-adapter" if args.adapter else "drafts", result))


if __name__ == "__main__":
    main()
