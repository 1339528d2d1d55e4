"""Training throughput and memory: the notebook's recipe vs dialogtune's, full and LoRA.

Same model (the embedded SmolLM2-135M-Instruct, real shapes), same DialogSum examples,
same Trainer, one epoch each, so both recipes process exactly the same examples:

- notebook: every example padded to ``--max-length`` (512) tokens, labels = input ids with
  the padding *not* masked (nor the prompt), fixed order, the model's full-vocabulary loss,
  fp32;
- dialogtune: dynamic padding, prompt and padding masked (-100), length-grouped batches,
  the selective loss (lm_head only where labels are), and bf16 autocast where the CPU has
  bf16 (``training.precision: auto``);
- dialogtune+gc: the same with gradient checkpointing (activations recomputed in backward),
  where LoRA's memory advantage shows: without it, activations dominate at this size.

Each configuration runs in its own subprocess so peak memory (``ru_maxrss``) is its own.
Writes ``benchmarks/results/training.json``::

    python benchmarks/training.py --threads 1    # ~12 min on a (busy) 2-core CPU
    python benchmarks/training.py --examples 16  # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = Path(os.environ.get("DIALOGTUNE_DIALOGSUM_DIR") or REPO.parent / "shared" / "data" / "dialogsum")
RECIPES = ("notebook", "dialogtune", "dialogtune+gc")  # gc: gradient checkpointing (memory for time)
CONFIGS = [(recipe, method) for recipe in RECIPES for method in ("full", "lora")]


def _rss_mb(peak: bool) -> float:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as handle:  # current resident set
        line = next(line for line in handle if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _notebook_examples(loaded: Any, encoded: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """The notebook's preprocessing, for a causal model: prompt + summary padded to
    ``max_length``; labels are the input ids, pad and prompt tokens included."""
    pad = loaded.tokenizer.pad_token_id
    rows = []
    for example in encoded:
        ids = example["input_ids"][:max_length]
        padding = max_length - len(ids)
        rows.append({"input_ids": ids + [pad] * padding, "attention_mask": [1] * len(ids) + [0] * padding,
                     "labels": ids + [pad] * padding})
    return rows


class _CountingCollator:
    """Wraps a collator to count padded and real (attention) tokens per batch."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.padded, self.real = inner, 0, 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        self.padded += batch["input_ids"].numel()
        self.real += int(batch["attention_mask"].sum())
        return batch


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one epoch with one recipe and method; return throughput and memory."""
    import torch
    from transformers import TrainingArguments, default_data_collator

    from dialogtune.data import DataConfig, load_records
    from dialogtune.models.loading import load_model
    from dialogtune.models.lora import LoraSettings, apply_lora
    from dialogtune.prompts import PromptTemplate
    from dialogtune.training.collator import make_collator
    from dialogtune.training.dataset import ExampleDataset, encode_records
    from dialogtune.training.loss import supports_selective_loss
    from dialogtune.training.recipe import resolve_precision
    from dialogtune.training.trainer import DialogTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe, method = args.worker
    loaded = load_model(args.model, dtype="fp32", device="cpu")
    records = load_records(DataConfig(source=str(DIALOGSUM), split="train", limit=args.examples))
    encoded = encode_records(loaded, records, PromptTemplate(), max_dialogue_tokens=args.max_length,
                             max_target_tokens=128)
    torch.manual_seed(0)
    if method == "lora":
        loaded.model = apply_lora(loaded.model, LoraSettings(r=16, alpha=32, dropout=0.0))
    baseline_mb = _rss_mb(peak=False)

    dialogtune = recipe.startswith("dialogtune")
    precision = resolve_precision("auto", loaded.model.config.model_type, use_cuda=False) if dialogtune else "fp32"
    if dialogtune:
        dataset, collator = ExampleDataset(encoded), _CountingCollator(make_collator(loaded.tokenizer))
    else:
        dataset = ExampleDataset(_notebook_examples(loaded, encoded, args.max_length))
        collator = _CountingCollator(default_data_collator)
    training_args = TrainingArguments(
        output_dir=str(Path(args.scratch) / f"{recipe}-{method}"), per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, learning_rate=1e-3 if method == "lora" else 1e-5, bf16=precision == "bf16",
        train_sampling_strategy="group_by_length" if dialogtune else "sequential", logging_strategy="no",
        save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        label_names=["labels"], gradient_checkpointing=recipe.endswith("+gc"),
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    trainer = DialogTrainer(model=loaded.model, args=training_args, train_dataset=dataset, data_collator=collator,
                            selective_loss=dialogtune and supports_selective_loss(loaded.model))
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    peak_mb = _rss_mb(peak=True)
    return {
        "recipe": recipe, "method": method, "precision": precision, "steps": trainer.state.global_step,
        "examples": len(dataset), "seconds": round(seconds, 2),
        "examples_per_s": round(len(dataset) / seconds, 4),
        "real_tokens_per_s": round(collator.real / seconds, 1),     # tokens that carry text
        "padded_tokens_per_s": round(collator.padded / seconds, 1),  # tensor positions computed
        "padding_fraction": round(1 - collator.real / collator.padded, 3),
        "train_loss": round(output.training_loss, 4),
        "peak_rss_mb": round(peak_mb, 1), "rss_after_load_mb": round(baseline_mb, 1),
        "training_memory_mb": round(peak_mb - baseline_mb, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=32, help="DialogSum train dialogues (one epoch)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512, help="the notebook's padding length")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "training.json"))
    parser.add_argument("--scratch", default="/tmp/dialogtune-bench-training")
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    if not (DIALOGSUM / "train.jsonl").is_file():
        sys.exit(f"DialogSum not found at {DIALOGSUM} (set DIALOGTUNE_DIALOGSUM_DIR)")

    results = []
    for recipe, method in CONFIGS:
        command = [sys.executable, __file__, "--worker", recipe, method, "--model", args.model,
                   "--examples", str(args.examples), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--threads", str(args.threads), "--scratch", args.scratch]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.exit(f"{recipe}/{method} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(results[-1]), flush=True)

    by = {(r["recipe"], r["method"]): r for r in results}
    ratios = {
        f"{method}_examples_per_s_{recipe}_over_notebook": round(
            by[recipe, method]["examples_per_s"] / by["notebook", method]["examples_per_s"], 2)
        for recipe in RECIPES[1:] for method in ("full", "lora")
    }
    for recipe in RECIPES:
        ratios[f"{recipe}_lora_over_full_peak_rss"] = round(
            by[recipe, "lora"]["peak_rss_mb"] / by[recipe, "full"]["peak_rss_mb"], 3)
        ratios[f"{recipe}_lora_over_full_training_memory"] = round(
            by[recipe, "lora"]["training_memory_mb"] / by[recipe, "full"]["training_memory_mb"], 3)
    report = {
        "benchmark": "training: notebook recipe vs dialogtune recipe (one epoch, same examples)",
        "model": args.model, "examples": args.examples, "batch_size": args.batch_size, "max_length": args.max_length,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "q,k,v,o,gate,up,down"},
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": results, "ratios": ratios,
        "targets": {"examples_per_s_ratio": ">= 5", "lora_over_full_peak_memory": "<= 0.6"},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
