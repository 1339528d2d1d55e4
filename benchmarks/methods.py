"""Seconds per training step of every fine-tuning method on the embedded model, to size a study.

For each variant of ``experiments/peft-methods.yaml`` (full, LoRA r=8/16/32, DoRA, IA3, prompt
tuning), with the CPU recipe's settings (``configs/smollm2-lora-cpu.yaml``: 4 x 2 examples per
step, dialogues cut to 320 tokens, bf16 autocast, compiled blocks, gradient checkpointing):

- ``--steps`` optimizer steps (default 6) on a seeded sample of DialogSum training dialogues;
  the first ``--warmup`` (default 2) include the one-time compile (and dynamic-shape
  recompiles) and are reported apart; the figure is the median of the others;
- generation with the study's settings (greedy, 64 new tokens, batches of 8) on
  ``--dialogues`` validation dialogues with the barely trained weights: an upper bound per
  dialogue (an untrained model rambles to the token limit; a trained one stops earlier).

Each variant runs in its own process (its own peak memory). Writes
``benchmarks/results/methods.json`` and prints the study's estimated CPU time for
``--study-steps`` steps and ``--study-dialogues`` evaluation dialogues::

    python benchmarks/methods.py                      # ~15 min on an idle 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, dialogsum_dir, save  # noqa: E402

RECIPE = ROOT / "configs" / "smollm2-lora-cpu.yaml"
# The study's variants (experiments/peft-methods.yaml): name -> --set overrides of the CPU recipe.
VARIANTS: dict[str, list[str]] = {
    "full": ["method=full", "training.learning_rate=5e-5"],
    "lora-r8": ["method=lora", "lora.r=8", "lora.alpha=16"],
    "lora-r16": ["method=lora", "lora.r=16", "lora.alpha=32"],
    "lora-r32": ["method=lora", "lora.r=32", "lora.alpha=64"],
    "dora-r16": ["method=dora", "dora.r=16", "dora.alpha=32", "dora.dropout=0.0"],
    "ia3": ["method=ia3", "training.learning_rate=1e-2"],
    "prompt-tuning": [
        "method=prompt_tuning",
        "prompt_tuning.num_virtual_tokens=20",
        "training.learning_rate=3e-2",
    ],
}


def measure_one(name: str, steps: int, warmup: int, dialogues: int) -> dict[str, Any]:
    """Train ``steps`` steps of one variant and time them; then time generation."""
    from transformers import TrainerCallback

    from dialogtune.data import DataConfig, load_records
    from dialogtune.generation import GenerationSettings, generate
    from dialogtune.methods import get_method
    from dialogtune.runinfo import peak_memory_mb
    from dialogtune.training import load_config, train

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.begin = 0.0

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.begin = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            *VARIANTS[name],
            f"output_dir={tmp}/run",
            f"data.source={dialogsum_dir()}",
            "data.train.every=null",
            f"data.train.sample={steps * 8}",
            "data.eval=null",
            "eval.strategy=no",
            f"training.max_steps={steps}",
            "training.logging_steps=1",
        ]
        config = load_config(RECIPE, overrides)
        timer = StepTimes()
        started = time.perf_counter()
        result = train(config, progress=False, callbacks=[timer])
        train_wall = time.perf_counter() - started
        marks = [timer.begin, *timer.ends]
        per_step = [b - a for a, b in zip(marks, marks[1:])]
        method = get_method(config.method)
        weights = Path(result.run_dir) / method.weights_folder
        weights_bytes = sum(f.stat().st_size for f in weights.glob("*.safetensors"))
        train_peak = peak_memory_mb()
        trainable = result.metadata["parameters"]["trainable"]
        del result
        records = load_records(DataConfig(source=str(dialogsum_dir()), split="validation", limit=dialogues))
        settings = GenerationSettings(max_new_tokens=64, batch_size=8, max_dialogue_tokens=512)
        loaded = method.load(config.model, weights, precision=settings.precision)
        generated = generate(loaded, [r.dialogue for r in records], settings, config.prompt, progress=False)
    return {
        "variant": name,
        "overrides": VARIANTS[name],
        "method": config.method,
        "trainable": trainable,
        "step_seconds": [round(s, 2) for s in per_step],
        "warmup_seconds": round(sum(per_step[:warmup]), 1),
        "seconds_per_step": round(statistics.median(per_step[warmup:]), 2),
        "train_wall_seconds": round(train_wall, 1),
        "train_peak_memory_mb": train_peak,
        "weights_bytes": weights_bytes,
        "generation_engine": generated.engine,
        "generation_seconds_per_dialogue": round(generated.seconds / len(records), 2),
        "generated_tokens_per_dialogue": round(generated.generated_tokens / len(records), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one variant (in a subprocess)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dialogues", type=int, default=16)
    parser.add_argument(
        "--study-steps",
        type=int,
        default=156,
        help="optimizer steps per variant (experiments/peft-methods.yaml: 156)",
    )
    parser.add_argument(
        "--study-dialogues",
        type=int,
        default=250,
        help="evaluation dialogues (experiments/peft-methods.yaml: 250)",
    )
    parser.add_argument(
        "--estimate-only", action="store_true", help="recompute the study estimate from the saved results"
    )
    args = parser.parse_args()
    if args.estimate_only:
        saved = json.loads((ROOT / "benchmarks" / "results" / "methods.json").read_text())
        saved["study"] = study_estimate(saved["variants"], args.study_steps, args.study_dialogues)
        saved.pop("machine", None)
        print(json.dumps(saved["study"], indent=2))
        print(f"wrote {save('methods', saved)}")
        return
    if args.one:
        result = measure_one(args.one, args.steps, args.warmup, args.dialogues)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = []
    run = time.strftime("%Y-%m-%dT%H:%M")  # ratios are taken within one run (same machine load)
    for name in args.variants:
        command = [sys.executable, __file__, "--one", name, "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup), "--dialogues", str(args.dialogues)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        results.append({**json.loads(lines[-1][len("RESULT ") :]), "run": run})
        print(json.dumps(results[-1]), flush=True)
    previous = ROOT / "benchmarks" / "results" / "methods.json"
    if set(args.variants) != set(VARIANTS) and previous.is_file():  # a partial rerun: keep the others
        kept = json.loads(previous.read_text())["variants"]
        measured = {r["variant"] for r in results if r["variant"] != ANCHOR_VARIANT}
        results = [r for r in kept if r["variant"] not in measured] + results
    estimate = study_estimate(results, args.study_steps, args.study_dialogues)
    path = save(
        "methods", {"steps": args.steps, "warmup": args.warmup, "variants": results, "study": estimate}
    )
    print(json.dumps(estimate, indent=2))
    print(f"wrote {path}")


# Idle-machine anchors measured before (2 threads, the CPU recipe; README and configs/smollm2-lora-cpu.yaml):
# LoRA r=16 trains at 3.8 s per step; greedy generation of 64 tokens at most takes 0.80 s per dialogue
# with a trained LoRA (6.7 min for 500) and 1.74 s zero-shot (14.5 min for 500: it rambles to the limit).
ANCHOR_VARIANT = "lora-r16"
ANCHOR_STEP_SECONDS = 3.8
ANCHOR_GENERATION_SECONDS = 0.80
ZERO_SHOT_GENERATION_SECONDS = 1.74


def study_estimate(results: list[dict[str, Any]], steps: int, dialogues: int) -> dict[str, Any]:
    """CPU minutes of the study on an idle machine.

    A shared machine's absolute times say little (other jobs take the cores), but every variant
    trains on the same batches in the same order, so the ratio of a variant's steps to LoRA r=16's
    steps measured in the same run (minutes apart) holds; it scales LoRA r=16's idle 3.8 s per step. Generation
    alike, from LoRA's idle 0.80 s per dialogue. Warm-up (compile) is counted once per variant at
    its idle figure (~45 s) plus ~40 s to load the model, encode the data and save.
    """
    anchors = {r.get("run"): r for r in results if r["variant"] == ANCHOR_VARIANT}
    timed = slice(2, None)  # after the warm-up steps
    rows = {}
    for r in sorted(results, key=lambda r: list(VARIANTS).index(r["variant"])):
        anchor = anchors[r.get("run")]  # LoRA r=16 measured in the same run (its repeats give 1.0 again)
        step_ratio = sum(r["step_seconds"][timed]) / sum(anchor["step_seconds"][timed])
        gen_ratio = r["generation_seconds_per_dialogue"] / anchor["generation_seconds_per_dialogue"]
        step = ANCHOR_STEP_SECONDS * step_ratio
        per_dialogue = ANCHOR_GENERATION_SECONDS * gen_ratio
        rows[r["variant"]] = {
            "step_ratio_vs_lora_r16": round(step_ratio, 2),
            "idle_seconds_per_step": round(step, 2),
            "train_min": round((steps * step + 45 + 40) / 60, 1),
            "generation_ratio_vs_lora_r16": round(gen_ratio, 2),
            "idle_generation_seconds_per_dialogue": round(per_dialogue, 2),
            "eval_min": round((dialogues * per_dialogue + 20) / 60, 1),
        }
    zero_shot = (dialogues * ZERO_SHOT_GENERATION_SECONDS + 20) / 60
    total = sum(v["train_min"] + v["eval_min"] for v in rows.values()) + zero_shot
    return {
        "steps": steps,
        "dialogues": dialogues,
        "anchors": {"variant": ANCHOR_VARIANT, "step_seconds": ANCHOR_STEP_SECONDS,
                    "generation_seconds_per_dialogue": ANCHOR_GENERATION_SECONDS,
                    "zero_shot_generation_seconds_per_dialogue": ZERO_SHOT_GENERATION_SECONDS},
        "variants": rows,
        "zero_shot_eval_min": round(zero_shot, 1),
        "total_min": round(total, 1),
    }  # fmt: skip


if __name__ == "__main__":
    main()
