"""End to end: ``dialogtune evaluate`` the way it ran before the fast path vs as shipped.

Both sides are the real command in a fresh process (model load, prompt building, generation,
ROUGE with bootstrap, files written), on the same validation dialogues, one after the other:

- ``before``: ``--precision fp32 --generation-engine generate --merge no`` (fp32 weights,
  transformers' ``generate`` in length-sorted static batches, an adapter left unmerged): what
  ``evaluate`` did before this work;
- ``shipped``: the defaults (``--precision auto``: bf16 products over an fp32 residual stream
  on a CPU with avx512_bf16, the adapter merged, the ragged continuous-batching engine).

Writes ``benchmarks/results/evaluate.json``: wall seconds (whole command) and generation
seconds (from each run's metrics), their ratios, ROUGE-1/2/L of each side, the paired
difference and how many summaries are identical.

    python benchmarks/evaluate.py [--adapter DIR] [--n 500] [--threads 1] [--batch-size 8]

Without ``--adapter`` the zero-shot model is evaluated. ``--threads`` sets OMP_NUM_THREADS
for both commands (1: stable timings on a shared CPU); ``--threads 0`` leaves it unset, so each
command uses the whole machine as a user's would (``before``: torch's intra-op threads;
``shipped``: one engine process per core, ``generation.processes`` auto) and the results go to
``evaluate-adapter-all-cores.json`` / ``evaluate-zero-shot-all-cores.json``. ``--batch-size``
defaults to the command's own default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dialogsum_dir, save  # noqa: E402

from dialogtune.evaluation.bootstrap import paired_bootstrap  # noqa: E402

SIDES = {
    "before": ["--precision", "fp32", "--generation-engine", "generate", "--merge", "no"],
    "shipped": [],
}


def run_side(name: str, common: list[str], work: Path, threads: int) -> dict[str, Any]:
    out = work / name
    command = [
        sys.executable,
        "-m",
        "dialogtune",
        "evaluate",
        *common,
        *SIDES[name],
        "--output-dir",
        str(out),
    ]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "metrics" / "validation.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "predictions" / "validation.jsonl").open(encoding="utf-8")]
    print(f"{name:<8} {seconds:7.1f} s  ROUGE-1 {metrics['rouge1']['mean']:.4f}", flush=True)
    return {"seconds": seconds, "metrics": metrics, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the adapter's base, else the embedded model")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    common = ["--data", str(dialogsum_dir()), "--split", "validation", "--limit", str(args.n)]
    common += ["--max-new-tokens", str(args.max_new_tokens), "--max-dialogue-tokens", "512"]
    common += ["--n-resamples", "1000"]
    if args.batch_size:
        common += ["--batch-size", str(args.batch_size)]
    if args.model:
        common += ["--model", args.model]
    if args.adapter:
        common += ["--adapter", args.adapter]
    with tempfile.TemporaryDirectory(prefix="dialogtune-bench-evaluate-") as tmp:
        runs = {name: run_side(name, common, Path(tmp), args.threads) for name in SIDES}

    before, shipped = runs["before"], runs["shipped"]
    by_id = {row["id"]: row for row in before["rows"]}
    pairs = [(by_id[row["id"]], row) for row in shipped["rows"]]
    quality = {}
    for key in ("rouge1", "rouge2", "rougeL"):
        diff = paired_bootstrap([a["scores"][key] for a, _ in pairs], [b["scores"][key] for _, b in pairs])
        quality[key] = {
            "before": round(before["metrics"][key]["mean"], 4),
            "shipped": round(shipped["metrics"][key]["mean"], 4),
            "difference": diff,
        }
    generation = {name: run["metrics"]["generation"]["generation_seconds"] for name, run in runs.items()}
    result = {
        "adapter": args.adapter,
        "model": shipped["metrics"]["model"],
        "n_dialogues": len(pairs),
        "threads": args.threads or f"all cores ({os.cpu_count()})",
        "processes": {name: run["metrics"]["generation"].get("processes") for name, run in runs.items()},
        "command_options": common,
        "sides": {name: SIDES[name] for name in SIDES},
        "seconds": {name: round(run["seconds"], 1) for name, run in runs.items()},
        "generation_seconds": generation,
        "speedup_whole_command": round(before["seconds"] / shipped["seconds"], 2),
        "speedup_generation": round(generation["before"] / generation["shipped"], 2),
        "precision": {name: run["metrics"]["model"].get("precision") for name, run in runs.items()},
        "identical_summaries": sum(a["prediction"] == b["prediction"] for a, b in pairs),
        "quality": quality,
        "target": "shipped >= 3x faster than before",
    }
    name = "evaluate-adapter" if args.adapter else "evaluate-zero-shot"
    name += "" if args.threads else "-all-cores"
    path = save(name, result)
    print(json.dumps({k: result[k] for k in ("seconds", "speedup_whole_command", "speedup_generation")}))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
