"""Evaluate one model (+ adapter) on one split and write a run directory.

The orchestrator of ``dialogtune evaluate`` and of an experiment's evaluation stages: it takes a
loaded model, generates (:mod:`dialogtune.predict`) and scores (:mod:`dialogtune.evaluation`,
which knows no model: strings in, scores out).

Layout (DESIGN.md): ``config.yaml`` (resolved), ``metadata.json``,
``predictions/<split>.jsonl`` (per-example scores included), ``metrics/<split>.json``.

The model is loaded here, or runs behind an OpenAI-compatible endpoint
(:class:`~dialogtune.experiments.endpoint.EndpointModel`, ``evaluate --endpoint``): the same
prompts, scores and files either way, with the endpoint recorded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialogtune.config import read_yaml
from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint
from dialogtune.errors import ConfigError, DataError, DialogtuneError
from dialogtune.evaluation.metrics import compute_metrics
from dialogtune.evaluation.predictions import prediction_row, write_predictions
from dialogtune.experiments.config import EvaluationSpec
from dialogtune.io import read_json_file, write_json
from dialogtune.models.fingerprint import weights_fingerprint
from dialogtune.models.loaded import LoadedModel
from dialogtune.models.params import count_parameters
from dialogtune.ownership import claim_output_dir, mark, refuse_protected, remove_tree
from dialogtune.predict import predict_records
from dialogtune.runinfo import run_metadata, write_yaml

if TYPE_CHECKING:
    from dialogtune.experiments.endpoint import EndpointModel

__all__ = ["EvaluationSpec", "evaluate_to_dir", "format_metrics"]

# What makes two evaluations the same: a folder holding another one is never mixed into.
_IDENTITY = (
    "model",
    "adapter",
    "weights",
    "endpoint",
    "data_fingerprint",
    "data",
    "generation",
    "prompt",
    "rouge",
    "bootstrap",
)


def _saved_config(out: Path) -> dict[str, Any]:
    """The folder's saved evaluation config; unreadable counts as "another evaluation"."""
    try:
        loaded = read_yaml(out / "config.yaml")
    except DialogtuneError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _changed(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    normal = json.loads(json.dumps(config, default=str))
    return [key for key in _IDENTITY if saved.get(key) != normal.get(key)]


def _finished(out: Path, split: str) -> bool:
    return all(
        (out / name).is_file()
        for name in ("metadata.json", f"metrics/{split}.json", f"predictions/{split}.jsonl")
    )


def evaluate_to_dir(
    loaded: LoadedModel | EndpointModel,
    records: list[Record],
    spec: EvaluationSpec,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Generate, score and write a run directory; returns the metrics object.

    A folder that already holds this very evaluation (same weights, data and settings) is resumed
    when interrupted and reused when finished (``metrics["reused"]``). One holding an evaluation
    of another model, adapter, data or settings is refused unless ``overwrite``, which replaces
    it. A folder holding anything else is always refused. For an endpoint, "the same weights"
    means the same URL, model name and served adapter folder (``GET /models``).
    """
    local = isinstance(loaded, LoadedModel)
    if not records:
        raise DataError("no records to evaluate (check --limit/--every/--sample)")
    missing = next((r for r in records if not r.references), None)
    if missing is not None:
        raise DataError(f"record '{missing.id}' has no reference summary: evaluate needs references")
    started = time.time()
    split = spec.data.split
    fingerprint = data_fingerprint(records)
    config = {
        "model": loaded.spec.raw,
        "adapter": loaded.adapter,
        "weights": weights_fingerprint(loaded) if local else None,
        "random_weights": loaded.spec.is_random,
        "data_fingerprint": fingerprint,
        **spec.identity(),  # data, generation, prompt, rouge, bootstrap
    }
    if not local:  # the weights are the server's: the run is identified by where it ran
        config["endpoint"] = loaded.identity()
    out, state = claim_output_dir(output_dir, "eval", overwrite=False, what="output folder")
    if state == "ours":
        saved = _saved_config(out)
        changed = _changed(saved, config)
        finished = _finished(out, split)
        if not changed and finished:  # the same weights, data and settings: nothing to redo
            try:
                metrics = read_json_file(out / "metrics" / f"{split}.json", ConfigError)
            except DialogtuneError:  # damaged: evaluate again (below), replacing it
                changed = ["metrics (unreadable)"]
            else:
                metrics["reused"] = True
                return metrics
        if changed and not overwrite and changed != ["metrics (unreadable)"]:
            raise ConfigError(
                f"{out} holds an evaluation of {saved.get('model')}"
                + (f" + adapter {saved.get('adapter')}" if saved.get("adapter") else "")
                + f" that differs in {', '.join(changed)}; choose another output folder or pass "
                "--overwrite to replace it"
            )
        if changed:  # overwrite (or a damaged finished run of ours): replace it
            refuse_protected(out)
            remove_tree(out)
    partial = out / "predictions" / f"{split}.jsonl.partial"
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "eval")
    write_yaml(out / "config.yaml", config)
    if local:
        predictions, stats = predict_records(
            loaded, records, spec.generation, spec.prompt, partial_path=partial, progress=progress
        )
    else:
        predictions, stats = loaded.predict_records(
            records, spec.generation, spec.prompt, partial_path=partial, progress=progress
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
    metrics["data"] = {**spec.data.to_dict(), "fingerprint": fingerprint}
    if loaded.spec.is_random:
        metrics["warning"] = "RANDOM WEIGHTS: these numbers say nothing about a pretrained model"
    rows = [prediction_row(r, p, e) for r, p, e in zip(records, predictions, per_example)]
    write_predictions(out / "predictions" / f"{split}.jsonl", rows)
    write_json(out / "metrics" / f"{split}.json", metrics)
    write_json(
        out / "metadata.json",
        run_metadata(
            started,
            model=loaded.describe(),
            weights_fingerprint=config["weights"],
            parameters=count_parameters(loaded.model) if local else None,
            data_fingerprint=fingerprint,
            generation_stats=stats,
        ),
    )
    # Last: until every file above is written, a rerun can still finish from the partial rows.
    partial.unlink(missing_ok=True)
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
