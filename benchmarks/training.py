"""Training throughput and memory: the notebook's recipe vs dialogtune's, full and LoRA.

For each model, on the same DialogSum examples, with the same Trainer, one epoch each:

- notebook: every example padded to ``--max-length`` (512) tokens — for seq2seq models the
  labels too, as the notebook's ``padding="max_length"`` does on both sides — labels padded
  with the pad id and learned (causal: the prompt too), fixed order, the model's own
  full-vocabulary loss, fp32;
- dialogtune: dynamic padding, prompt and padding masked (-100), length-grouped batches
  (:mod:`dialogtune.training.sampler`), the selective loss for causal models (lm_head only
  where labels are), bf16 autocast where the CPU has bf16 (``training.precision: auto``) and,
  for LoRA, the frozen weights stored in bf16 (``training.frozen_weights: auto``);
- dialogtune+gc: the same with gradient checkpointing (activations recomputed in backward);
- dialogtune+compile: dialogtune with ``training.compile`` (the repeated blocks compiled by
  ``torch.compile``, :mod:`dialogtune.training.compile`). The one-time compile is done by a
  one-step warm-up run on the same batch before the timed epoch and reported apart
  (``compile_warmup_seconds``). It is paid once per run, so two figures are given: with the
  warm-up excluded (``examples_per_s``, the steady state) and with it amortised over the real
  CPU recipe's length (``examples_per_s_amortised``: ``--amortise-examples`` examples, by default
  the 4,154 of configs/smollm2-lora-cpu.yaml, at the measured speed, plus one warm-up). The
  amortised figure is the honest one for a user and the one the README quotes.

Every configuration runs ``--repeats`` times (default 2; peak RSS varies ~25% between runs):
each figure is the median of the repeats, with every repeat's value kept in the JSON.

Models: the embedded SmolLM2-135M-Instruct (real weights and tokenizer) and FLAN-T5-base's
exact architecture with random weights (the notebook's model; its weights are not
reachable offline). Throughput does not depend on the weights' values, but on token counts:
T5's SentencePiece tokenizer is not available offline either, so its examples are
SmolLM2's BPE token ids folded into T5's vocabulary (same lengths as SmolLM2 tokens of
the same text). Its loss values mean nothing; its examples/s and memory are real.

LoRA: the shipped recipes' settings — SmolLM2 r=16, alpha=32, attention+MLP projections,
no dropout (configs/smollm2-lora-cpu.yaml); FLAN-T5 the notebook's r=32, alpha=32, q/v,
dropout 0.05.

Each configuration runs in its own subprocess so peak memory (``ru_maxrss``) is its own.
Writes ``benchmarks/results/training.json``::

    python benchmarks/training.py                          # both models x 2 repeats, ~50 min on an idle 2-core CPU
    python benchmarks/training.py --models smollm2-135m-instruct --examples 16   # quicker, noisier
"""

from __future__ import annotations

import argparse
import dataclasses
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
# gc: gradient checkpointing (memory for time); compile: training.compile (regional torch.compile)
RECIPES = ("notebook", "dialogtune", "dialogtune+gc", "dialogtune+compile", "dialogtune+compile+gc")
CONFIGS = [(recipe, method) for recipe in RECIPES for method in ("full", "lora")]


def _rss_mb(peak: bool) -> float:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as handle:  # current resident set
        line = next(line for line in handle if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _notebook_examples(
    encoded: list[dict[str, list[int]]], pad: int, max_length: int, seq2seq: bool
) -> list[dict[str, list[int]]]:
    """The notebook's preprocessing: inputs padded to ``max_length``; labels padded with the
    pad id and learned. Seq2seq: labels = the summary, also padded to ``max_length``. Causal:
    labels = the input ids (prompt + summary), pad tokens included."""
    rows = []
    for example in encoded:
        if seq2seq:
            ids, summary = example["input_ids"][:max_length], example["labels"][:max_length]
            labels = summary + [pad] * (max_length - len(summary))
        else:
            ids = example["input_ids"][:max_length]
            labels = ids + [pad] * (max_length - len(ids))
        padding = max_length - len(ids)
        rows.append(
            {
                "input_ids": ids + [pad] * padding,
                "attention_mask": [1] * len(ids) + [0] * padding,
                "labels": labels,
            }
        )
    return rows


def _standin_seq2seq_examples(
    records: list[Any], max_length: int, vocab_size: int
) -> list[dict[str, list[int]]]:
    """Seq2seq examples with realistic lengths for a model without its tokenizer: the
    notebook's prompt and the summary tokenized by SmolLM2's BPE, ids folded into the
    model's vocabulary past its 3 specials (T5: pad 0, eos 1, unk 2), eos appended."""
    from dialogtune.models.loading import load_tokenizer
    from dialogtune.prompts import PromptTemplate

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    template = PromptTemplate()

    def ids(text: str, limit: int) -> list[int]:
        return [3 + i % (vocab_size - 3) for i in tokenizer(text, add_special_tokens=False)["input_ids"]][
            : limit - 1
        ] + [1]

    return [
        {
            "input_ids": ids(template.template.format(dialogue=r.dialogue), max_length),
            "labels": ids(r.references[0], 128),
        }
        for r in records
    ]


class _CountingCollator:
    """Wraps a collator to count padded and real (attention) tokens per batch."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.padded, self.real, self.label_positions = inner, 0, 0, 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        self.padded += batch["input_ids"].numel()
        self.real += int(batch["attention_mask"].sum())
        self.label_positions += batch["labels"].numel()  # seq2seq: decoder positions computed
        return batch


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one epoch with one recipe and method; return throughput and memory."""
    import torch
    from transformers import TrainingArguments, default_data_collator

    from dialogtune.data import DataConfig, load_records
    from dialogtune.methods import get_method
    from dialogtune.models.loading import load_model
    from dialogtune.prompts import PromptTemplate
    from dialogtune.training.collator import make_collator
    from dialogtune.training.dataset import ExampleDataset, encode_records
    from dialogtune.training.loss import supports_selective_loss
    from dialogtune.training.precision import resolve_precision, store_frozen_weights
    from dialogtune.training.trainer import DialogTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe, method = args.worker
    dialogtune = recipe.startswith("dialogtune")
    loaded = load_model(args.model, dtype="fp32", device="cpu")
    seq2seq = loaded.kind.name == "seq2seq"
    records = load_records(DataConfig(source=str(DIALOGSUM), split="train", limit=args.examples))
    if seq2seq and loaded.random_init:
        encoded = _standin_seq2seq_examples(records, args.max_length, loaded.model.config.vocab_size)
    else:
        encoded = encode_records(
            loaded, records, PromptTemplate(), max_dialogue_tokens=args.max_length, max_target_tokens=128
        )
    torch.manual_seed(0)
    chosen = get_method(method)
    loaded.model = chosen.apply(loaded.model, _settings(method, loaded.model.config.model_type))
    precision = (
        resolve_precision("auto", loaded.model.config.model_type, use_cuda=False) if dialogtune else "fp32"
    )
    frozen = store_frozen_weights(loaded.model, "auto", method=method, precision=precision, sharded=False)
    with (
        torch.no_grad()
    ):  # page every weight in (safetensors maps them lazily), so RSS after load counts them
        sum(
            float(p.detach().reshape(-1)[::512].float().sum()) for p in loaded.model.parameters()
        )  # 1 read/page
    baseline_mb = _rss_mb(peak=False)

    if dialogtune:
        dataset, collator = ExampleDataset(encoded), _CountingCollator(make_collator(loaded.tokenizer))
    else:
        dataset = ExampleDataset(
            _notebook_examples(encoded, loaded.tokenizer.pad_token_id, args.max_length, seq2seq)
        )
        collator = _CountingCollator(default_data_collator)
    training_args = TrainingArguments(
        output_dir=str(Path(args.scratch) / f"{recipe}-{method}"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=1e-5 if chosen.trains_base else 1e-3,
        bf16=precision == "bf16",
        train_sampling_strategy="group_by_length" if dialogtune else "sequential",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        label_names=["labels"],
        activation_checkpointing="+gc" in recipe,
        activation_checkpointing_kwargs={"use_reentrant": False},
    )

    def make_trainer(arguments: TrainingArguments) -> DialogTrainer:
        return DialogTrainer(
            model=loaded.model,
            args=arguments,
            train_dataset=dataset,
            data_collator=collator,
            selective_loss=dialogtune and supports_selective_loss(loaded.model),
            compile_blocks="+compile" in recipe,
        )

    warmup_seconds = None
    if "+compile" in recipe:  # compile on the epoch's first (longest) batch, untimed
        start = time.perf_counter()
        make_trainer(dataclasses.replace(training_args, max_steps=1)).train()
        warmup_seconds = round(time.perf_counter() - start, 1)
        collator.padded = collator.real = collator.label_positions = 0
    trainer = make_trainer(training_args)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    peak_mb = _rss_mb(peak=True)
    return {
        "model": args.model,
        "recipe": recipe,
        "method": method,
        "precision": precision,
        "frozen_weights": frozen,
        "steps": trainer.state.global_step,
        "examples": len(dataset),
        "seconds": round(seconds, 2),
        "examples_per_s": round(len(dataset) / seconds, 4),
        "real_tokens_per_s": round(collator.real / seconds, 1),  # tokens that carry text
        "padded_tokens_per_s": round(collator.padded / seconds, 1),  # tensor positions computed
        "padding_fraction": round(1 - collator.real / collator.padded, 3),
        "label_positions_per_example": round(collator.label_positions / len(dataset), 1),
        "train_loss": round(output.training_loss, 4),
        "peak_rss_mb": round(peak_mb, 1),
        "rss_after_load_mb": round(baseline_mb, 1),
        "training_memory_mb": round(peak_mb - baseline_mb, 1),
        "threads": torch.get_num_threads(),
        **({"compile_warmup_seconds": warmup_seconds} if warmup_seconds is not None else {}),
    }


def _settings(method: str, model_type: str) -> Any:
    """The shipped recipes' LoRA: the notebook's for T5, configs/smollm2-lora-cpu.yaml's for Llamas."""
    from dialogtune.methods.lora import LoraSettings

    if method != "lora":
        return None  # full fine-tuning has no settings
    if model_type == "t5":
        return LoraSettings(r=32, alpha=32, dropout=0.05)
    return LoraSettings(r=16, alpha=32, dropout=0.0)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _combine(repeats: list[dict[str, Any]], amortise_examples: int) -> dict[str, Any]:
    """One configuration's repeats: medians, every repeat's value, and the amortised speed."""
    combined = dict(repeats[0])
    for key in ("seconds", "examples_per_s", "real_tokens_per_s", "padded_tokens_per_s", "peak_rss_mb",
                "rss_after_load_mb", "training_memory_mb", "compile_warmup_seconds"):  # fmt: skip
        values = [r[key] for r in repeats if r.get(key) is not None]
        if values:
            combined[key] = round(_median(values), 4)
            combined[f"{key}_repeats"] = values
    warmup = combined.get("compile_warmup_seconds") or 0.0
    # The real recipe's examples at the steady speed, plus the one-time compile.
    combined["examples_per_s_amortised"] = round(
        amortise_examples / (amortise_examples / combined["examples_per_s"] + warmup), 4
    )
    return combined


def _run_model(model: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    results = []
    for recipe, method in CONFIGS:
        repeats = [_run_worker(model, recipe, method, args) for _ in range(args.repeats)]
        results.append(_combine(repeats, args.amortise_examples))
        print(json.dumps(results[-1]), flush=True)

    by = {(r["recipe"], r["method"]): r for r in results}
    ratios = {}
    for figure in ("examples_per_s", "examples_per_s_amortised"):
        for recipe in RECIPES[1:]:
            for method in ("full", "lora"):
                ratios[f"{method}_{figure}_{recipe}_over_notebook"] = round(
                    by[recipe, method][figure] / by["notebook", method][figure], 2
                )
    for recipe in RECIPES:
        ratios[f"{recipe}_lora_over_full_peak_rss"] = round(
            by[recipe, "lora"]["peak_rss_mb"] / by[recipe, "full"]["peak_rss_mb"], 3
        )
        ratios[f"{recipe}_lora_over_full_training_memory"] = round(
            by[recipe, "lora"]["training_memory_mb"] / by[recipe, "full"]["training_memory_mb"], 3
        )
    return results, ratios


def _run_worker(model: str, recipe: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in its own subprocess, so its peak memory is its own."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        recipe,
        method,
        "--models",
        model,
        "--examples",
        str(args.examples),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--threads",
        str(args.threads),
        "--scratch",
        args.scratch,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"{model} {recipe}/{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "random:flan-t5-base"])
    parser.add_argument("--examples", type=int, default=32, help="DialogSum train dialogues (one epoch)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512, help="the notebook's padding length")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (medians reported)")
    parser.add_argument(
        "--amortise-examples",
        type=int,
        default=4154,
        help="amortise the compile warm-up over this many examples (the CPU recipe's 4,154)",
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "training.json"))
    parser.add_argument("--scratch", default="/tmp/dialogtune-bench-training")
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.model = args.models[0]
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    if not (DIALOGSUM / "train.jsonl").is_file():
        sys.exit(f"DialogSum not found at {DIALOGSUM} (set DIALOGTUNE_DIALOGSUM_DIR)")

    from dialogtune.io import write_json

    models = {}
    for model in args.models:
        results, ratios = _run_model(model, args)
        models[model] = {"results": results, "ratios": ratios}
        print(model, json.dumps(ratios, indent=2), flush=True)
    write_json(
        Path(args.output),
        {
            "benchmark": "training: notebook recipe vs dialogtune recipe (one epoch, same examples)",
            "examples": args.examples,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "amortise_examples": args.amortise_examples,
            "max_length": args.max_length,
            "lora": {
                "t5": "r=32, alpha=32, q/v, dropout 0.05 (the notebook's)",
                "llama": "r=16, alpha=32, q/k/v/o/gate/up/down, dropout 0 (configs/smollm2-lora-cpu.yaml)",
            },
            "notes": {
                "random:flan-t5-base": "FLAN-T5-base architecture with RANDOM weights (the real ones are not "
                "reachable offline); token ids from SmolLM2's tokenizer folded into T5's vocabulary. "
                "Speed and memory are real; its loss values are meaningless."
            },
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "models": models,
            "targets": {"examples_per_s_ratio": ">= 5", "lora_over_full_peak_memory": "<= 0.6"},
        },
    )


if __name__ == "__main__":
    main()
