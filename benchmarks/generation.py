"""Generation speed: the notebook's loop, today's batches, and each optimization, in one run.

Same model (the embedded SmolLM2-135M-Instruct), same validation dialogues, greedy, same
prompt unless a side says otherwise. Sides:

- ``notebook``: one dialogue at a time through transformers' ``generate``, fp32 (the notebook's cell);
- ``batched-fp32``: length-sorted static batches through ``generate``, fp32 (dialogtune before
  the ragged engine);
- ``batched-bf16``: the same in bf16 as shipped (bf16 products over an fp32 residual stream, the
  top logits in fp32: :mod:`dialogtune.models.mixed`);
- ``engine-fp32`` / ``engine-bf16``: the ragged continuous-batching engine
  (:mod:`dialogtune.generation.engine`), fp32 / bf16 as shipped;
- ``engine-bf16-cast``: the engine with the whole model cast to bf16 (every activation rounded;
  what bf16 meant before the fp32 residual stream): what the fp32 residual stream costs;
- ``engine-bf16-one-at-a-time``: the engine with one slot and no draft tokens — its outputs must
  equal ``engine-bf16``'s exactly (batch invariance, measured on the real model);
- ``engine-bf16-one-at-a-time-drafts``: the same with the shipped draft tokens
  (``generation.lookahead``, :mod:`dialogtune.generation.lookup`) — what a lone request gets: its
  outputs must equal the side above's exactly, in fewer decode steps;
- ``engine-bf16-lean-prompt``: the engine in bf16 with the shipped prompt (no default system
  message): the fast path as users get it;
- ``engine-bf16-lean-prompt-one-process``: the same in one process (``generation.processes: 1``):
  with ``--threads 2`` or more, what the engine processes (:mod:`dialogtune.generation.processes`)
  add over intra-op threads.
- ``engine-bf16-lean-prompt-32-slots``: the fast path with 32 sequences decoding at once instead of
  ``--batch-size`` (the engine's most, :data:`dialogtune.generation.ragged.MAX_ROWS`): the engine's
  summaries do not depend on it (checked against ``engine-bf16-lean-prompt``), only its speed does.

With ``--threads 1`` (the default: stable ratios on a shared machine) every side runs on one
core and the engine in one process; with ``--threads N`` every side may use N cores: torch's
intra-op threads for ``generate``, engine processes for the engine (``generation.processes``
auto), except the one-at-a-time sides, which stay in one process (a lone request).

All sides but the last use the prompt dialogtune used before (SmolLM2's default system message
kept), so that their outputs can be compared with the fp32 reference. Writes
``benchmarks/results/generation.json``: seconds, ratios against ``batched-fp32`` and
``notebook``, identical outputs against ``batched-fp32``, and generated tokens.

    python benchmarks/generation.py [--n 64] [--max-new-tokens 64] [--threads 1] [--sides a b ...]

``--sides`` runs some sides only (``batched-fp32`` always runs: it is the reference) and writes
``generation-sides.json`` instead, leaving the full run's file alone; ``--threads N`` (N > 1)
writes ``generation-N-threads.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import read_split, save  # noqa: E402

from dialogtune.generation import GenerationSettings, build_prompts, generate  # noqa: E402
from dialogtune.generation.ragged import MAX_ROWS  # noqa: E402
from dialogtune.models import load_model  # noqa: E402
from dialogtune.models.inference import load_for_adapters, load_for_inference  # noqa: E402
from dialogtune.prompts import PromptTemplate  # noqa: E402

BEFORE = PromptTemplate(keep_default_system=True)  # the prompt dialogtune sent before the lean one
LEAN = PromptTemplate()


def notebook_loop(loaded: Any, dialogues: list[str], settings: GenerationSettings) -> list[str]:
    """One dialogue at a time: tokenize, generate, decode (the notebook's cell, same prompt)."""
    prompts = build_prompts(loaded, dialogues, BEFORE, settings.max_dialogue_tokens)
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([loaded.kind.encode_prompts(loaded.tokenizer, [prompt])[0]])
            out = loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            outputs.append(loaded.kind.decode_generated(loaded.tokenizer, out, ids.shape[1])[0])
    return outputs


def static_batches(loaded: Any, dialogues: list[str], settings: GenerationSettings) -> list[str]:
    """transformers' generate in length-sorted batches (``generation.engine: generate``)."""
    static = GenerationSettings(**{**settings.to_dict(), "engine": "generate"})
    return generate(loaded, dialogues, static, BEFORE, progress=False).texts


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = fn()
    return texts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-dialogue-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    parser.add_argument("--sides", nargs="+", metavar="SIDE", help="run these sides only (and batched-fp32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dialogues = [row["dialogue"] for row in read_split("validation", args.n)]
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        max_dialogue_tokens=args.max_dialogue_tokens,
    )
    one = GenerationSettings(**{**settings.to_dict(), "batch_size": 1, "lookahead": 0, "processes": 1})
    one_drafts = GenerationSettings(**{**settings.to_dict(), "batch_size": 1, "processes": 1})
    one_process = GenerationSettings(**{**settings.to_dict(), "processes": 1})
    wide = GenerationSettings(**{**settings.to_dict(), "batch_size": MAX_ROWS})
    cast = load_for_adapters(args.model, precision="bf16")  # every weight and activation in bf16
    models = {
        "fp32": load_model(args.model, dtype="fp32"),
        "bf16": load_for_inference(args.model, precision="bf16"),
    }
    for loaded in [*models.values(), cast]:  # warm-up: the first calls pay one-time kernel set-up
        generate(loaded, dialogues[:2], GenerationSettings(max_new_tokens=4), BEFORE, progress=False)
        static_batches(loaded, dialogues[:2], GenerationSettings(max_new_tokens=4))

    fp32, bf16 = models["fp32"], models["bf16"]
    sides: dict[str, Callable[[], list[str]]] = {
        "notebook": lambda: notebook_loop(fp32, dialogues, settings),
        "batched-fp32": lambda: static_batches(fp32, dialogues, settings),
        "batched-bf16": lambda: static_batches(bf16, dialogues, settings),
        "engine-fp32": lambda: generate(fp32, dialogues, settings, BEFORE, progress=False).texts,
        "engine-bf16": lambda: generate(bf16, dialogues, settings, BEFORE, progress=False).texts,
        "engine-bf16-cast": lambda: generate(cast, dialogues, settings, BEFORE, progress=False).texts,
        "engine-bf16-one-at-a-time": lambda: generate(bf16, dialogues, one, BEFORE, progress=False).texts,
        "engine-bf16-one-at-a-time-drafts": lambda: (
            generate(bf16, dialogues, one_drafts, BEFORE, progress=False).texts
        ),
        "engine-bf16-lean-prompt": lambda: generate(bf16, dialogues, settings, LEAN, progress=False).texts,
        "engine-bf16-lean-prompt-one-process": lambda: (
            generate(bf16, dialogues, one_process, LEAN, progress=False).texts
        ),
        "engine-bf16-lean-prompt-32-slots": lambda: (
            generate(bf16, dialogues, wide, LEAN, progress=False).texts
        ),
    }
    if args.sides:
        unknown = sorted(set(args.sides) - set(sides))
        if unknown:
            raise SystemExit(f"unknown side(s): {', '.join(unknown)}; choose from {', '.join(sides)}")
        sides = {name: fn for name, fn in sides.items() if name == "batched-fp32" or name in args.sides}
    texts: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name, fn in sides.items():
        texts[name], seconds[name] = timed(fn)
        print(f"{name:<28} {seconds[name]:8.1f} s", flush=True)

    reference = texts["batched-fp32"]

    def agree(a: str, b: str) -> int | None:
        """How many summaries sides ``a`` and ``b`` share (None when either did not run)."""
        return sum(x == y for x, y in zip(texts[a], texts[b])) if {a, b} <= set(texts) else None

    plain, drafted = "engine-bf16-one-at-a-time", "engine-bf16-one-at-a-time-drafts"
    both = {plain, drafted} <= set(texts)
    result = {
        "model": fp32.spec.display_name,
        "n_dialogues": len(dialogues),
        "settings": settings.to_dict(),
        "threads": torch.get_num_threads(),
        "sides": {
            name: {
                "seconds": round(seconds[name], 2),
                "speedup_vs_batched_fp32": round(seconds["batched-fp32"] / seconds[name], 2),
                "speedup_vs_notebook": round(seconds["notebook"] / seconds[name], 2)
                if "notebook" in seconds
                else None,
                "identical_to_batched_fp32": sum(a == b for a, b in zip(reference, texts[name])),
            }
            for name in sides
        },
        "engine_batched_equals_one_at_a_time": agree("engine-bf16", "engine-bf16-one-at-a-time"),
        "processes_equal_one_process": agree(
            "engine-bf16-lean-prompt", "engine-bf16-lean-prompt-one-process"
        ),
        "slots_32_equal_slots_16": agree("engine-bf16-lean-prompt", "engine-bf16-lean-prompt-32-slots"),
        "drafts_equal_no_drafts": agree(plain, drafted),
        "drafts_speedup_one_at_a_time": round(seconds[plain] / seconds[drafted], 2) if both else None,
        "notebook_equals_batched_fp32": agree("notebook", "batched-fp32"),
        "targets": {"fast path vs batched fp32": ">= 3x", "fast path vs notebook": ">= 10x"},
    }
    name = "generation-sides" if args.sides else "generation"
    path = save(name if args.threads == 1 else f"{name}-{args.threads}-threads", result)
    for name, side in result["sides"].items():
        print(
            f"{name:<28} {side['speedup_vs_batched_fp32']}x batched fp32, {side['identical_to_batched_fp32']} identical"
        )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
