"""Evaluate one model (+ adapter) on one split and write a run directory.

Layout (DESIGN.md): ``config.yaml`` (resolved), ``metadata.json``,
``predictions/<split>.jsonl`` (per-example scores included), ``metrics/<split>.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.data.config import DataConfig
from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint
from dialogtune.errors import DataError
from dialogtune.evaluation.metrics import compute_metrics
from dialogtune.evaluation.predictions import prediction_row, write_predictions
from dialogtune.evaluation.rouge import RougeSettings
from dialogtune.generation import GenerationSettings
from dialogtune.io import write_json
from dialogtune.models.loading import LoadedModel
from dialogtune.models.params import count_parameters
from dialogtune.predict import predict_records
from dialogtune.prompts import PromptTemplate
from dialogtune.runinfo import run_metadata, write_yaml


@dataclass
class EvaluationSpec:
    """Everything that determines an evaluation's numbers (saved as ``config.yaml``)."""

    data: DataConfig
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    rouge: RougeSettings = field(default_factory=RougeSettings)
    n_resamples: int = 1000
    seed: int = 0


def evaluate_to_dir(
    loaded: LoadedModel,
    records: list[Record],
    spec: EvaluationSpec,
    output_dir: str | Path,
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Generate, score and write a run directory; returns the metrics object."""
    if not records:
        raise DataError("no records to evaluate (check --limit/--every/--sample)")
    missing = next((r for r in records if not r.references), None)
    if missing is not None:
        raise DataError(f"record '{missing.id}' has no reference summary: evaluate needs references")
    started = time.time()
    out = Path(output_dir)
    split = spec.data.split
    config = {
        "model": loaded.spec.raw,
        "adapter": loaded.adapter,
        "random_weights": loaded.spec.is_random,
        "data": spec.data.to_dict(),
        "generation": spec.generation.to_dict(),
        "prompt": spec.prompt.to_dict(),
        "rouge": spec.rouge.to_dict(),
        "bootstrap": {"n_resamples": spec.n_resamples, "seed": spec.seed},
    }
    write_yaml(out / "config.yaml", config)
    predictions, stats = predict_records(
        loaded,
        records,
        spec.generation,
        spec.prompt,
        partial_path=out / "predictions" / f"{split}.jsonl.partial",
        progress=progress,
    )
    metrics, per_example = compute_metrics(
        predictions,
        [list(r.references) for r in records],
        spec.rouge,
        n_resamples=spec.n_resamples,
        seed=spec.seed,
    )
    metrics["model"] = loaded.describe()
    metrics["generation"] = {**spec.generation.to_dict(), **stats}
    metrics["data"] = {**spec.data.to_dict(), "fingerprint": data_fingerprint(records)}
    if loaded.spec.is_random:
        metrics["warning"] = "RANDOM WEIGHTS: these numbers say nothing about a pretrained model"
    rows = [prediction_row(r, p, e) for r, p, e in zip(records, predictions, per_example)]
    write_predictions(out / "predictions" / f"{split}.jsonl", rows)
    write_json(out / "metrics" / f"{split}.json", metrics)
    (out / "predictions" / f"{split}.jsonl.partial").unlink(missing_ok=True)
    write_json(
        out / "metadata.json",
        run_metadata(
            started,
            model=loaded.describe(),
            parameters=count_parameters(loaded.model),
            data_fingerprint=metrics["data"]["fingerprint"],
            generation_stats=stats,
        ),
    )
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small text table: type, mean, 95% CI, and max over references."""
    lines = [f"{'metric':<10} {'mean':>7}  {'95% CI':<17} {'max-ref':>7}"]
    maxes = metrics.get("max_over_references", {})
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        if key not in metrics:
            continue
        m = metrics[key]
        best = maxes.get(key, {}).get("mean")
        lines.append(
            f"{key:<10} {m['mean']:>7.4f}  [{m['ci_low']:.4f}, {m['ci_high']:.4f}] {best:>7.4f}"
            if best is not None
            else f"{key:<10} {m['mean']:>7.4f}"
        )
    lines.append(f"n={metrics.get('n')} dialogues, {metrics.get('n_references')} references")
    if metrics.get("warning"):
        lines.append(f"WARNING: {metrics['warning']}")
    return "\n".join(lines)
