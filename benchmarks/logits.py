"""What the fp32 top logits cost: one bf16 decode step with the plain output layer, with
:class:`~dialogtune.models.logits.RefinedLogits` (the shipped path), and with the whole output
layer in fp32 (the obvious alternative).

A SmolLM2-135M-shaped model (random weights: timing does not depend on them) in bf16, a cache
of ``--context`` tokens per row, one new token per row, ``--rows`` rows at once. The three
sides run interleaved, ``--repeats`` times each; medians. The quality side of the same choice
(identical summaries, ROUGE on all 500 validation dialogues) is in docs/generation.md.

    python benchmarks/logits.py [--rows 1 8 16] [--context 256] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


class FullFp32Head(nn.Module):
    """The whole output layer in fp32: exact, but a 49k x 576 fp32 product per step."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(head.weight.detach().float(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden.float(), self.weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from dialogtune.models.logits import RefinedLogits
    from dialogtune.models.random_configs import build_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_config("smollm2-135m")).to(torch.bfloat16).eval()
    plain = model.get_output_embeddings()
    heads = {
        "plain bf16": plain,
        "fp32 top 8 (shipped)": RefinedLogits(plain),
        "fp32 whole layer": FullFp32Head(plain),
    }
    vocab = model.config.vocab_size
    rows_out = []
    for rows in args.rows:
        prompt = torch.randint(0, vocab, (rows, args.context))
        with torch.inference_mode():
            prefill = model(input_ids=prompt, use_cache=True)
        times: dict[str, list[float]] = {name: [] for name in heads}
        step = torch.randint(0, vocab, (rows, 1))
        for _ in range(args.repeats):
            for name, head in heads.items():
                model.set_output_embeddings(head)
                cache = copy.deepcopy(prefill.past_key_values)  # each step starts from the same cache
                with torch.inference_mode():
                    start = time.perf_counter()
                    model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
                    times[name].append(time.perf_counter() - start)
        model.set_output_embeddings(plain)
        medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
        base = medians["plain bf16"]
        row = {
            "rows": rows,
            "context": args.context,
            "decode_step_ms": {name: round(ms, 2) for name, ms in medians.items()},
            "vs_plain": {name: round(ms / base, 3) for name, ms in medians.items()},
        }
        rows_out.append(row)
        print(
            f"rows {rows:>2}: "
            + ", ".join(f"{n} {ms:.1f} ms ({ms / base:.3f}x)" for n, ms in medians.items())
        )
    path = save(
        "logits",
        {
            "benchmark": "logits",
            "model": "smollm2-135m shapes, random weights, bf16",
            "repeats": args.repeats,
            "threads": args.threads,
            "results": rows_out,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
