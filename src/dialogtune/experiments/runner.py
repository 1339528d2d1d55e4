"""Run an experiment: train each variant, evaluate every model on the same dialogues, report.

Layout of ``output_dir``::

    experiment.yaml        the resolved experiment config
    experiment.json        manifest: evaluation runs in order (``dialogtune report DIR`` reads it)
    train/<name>/          a training run directory (dialogtune train) + stage.json
    eval/<name>/           an evaluation run directory (dialogtune evaluate) + stage.json
    report/                report.md, report.html, report.json, PNGs

Each stage writes ``stage.json`` last, holding a hash (``key``) of everything that determines its
output: the resolved training config (minus where it is written), or the model, the weights it was
given, the evaluation settings and the evaluation data's fingerprint. A rerun reuses a stage whose
key matches, so an interrupted experiment continues where it stopped and a changed setting reruns
only the stages it affects: a new LoRA rank retrains and re-evaluates that variant alone; new
generation settings re-evaluate every model and retrain nothing. An interrupted training resumes
from its last checkpoint, an interrupted evaluation from its last finished batch.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.config import read_yaml
from dialogtune.data.records import Record
from dialogtune.errors import DataError, DialogtuneError
from dialogtune.experiments.config import ExperimentConfig, ModelEntry, resolve_config_path
from dialogtune.io import read_json_file, write_json
from dialogtune.methods import get_method
from dialogtune.ownership import claim_output_dir, mark, remove_tree
from dialogtune.report.collect import EXPERIMENT_MANIFEST

STAGE_FILE = "stage.json"
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stage_key(payload: Any) -> str:
    """A short, stable hash of a JSON-able payload (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_stage(stage_dir: Path) -> dict[str, Any]:
    """The stage marker, or ``{}`` when there is none or it is unreadable (the stage then reruns)."""
    try:
        return read_json_file(stage_dir / STAGE_FILE)
    except DataError:
        return {}


def write_stage(stage_dir: Path, kind: str, key: str, config: Any) -> dict[str, Any]:
    stage = {
        "stage": kind,
        "key": key,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished_ns": time.time_ns(),
        "config": config,
    }
    write_json(stage_dir / STAGE_FILE, stage)
    return stage


@dataclass
class StageOutcome:
    kind: str  # "train" or "eval"
    name: str
    path: Path
    key: str
    reused: bool
    seconds: float


@dataclass
class ExperimentResult:
    output_dir: Path
    stages: list[StageOutcome] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def stage(self, kind: str, name: str) -> StageOutcome:
        return next(s for s in self.stages if s.kind == kind and s.name == name)


# ---- training --------------------------------------------------------------------------------


def training_config(entry: ModelEntry, experiment: ExperimentConfig, output_dir: Path):  # -> TrainConfig
    """The resolved training config of a variant: file or inline mapping, ``set``, then ours.

    Ours: the run is written to ``train/<name>/`` and uses the experiment's prompt.
    """
    from dialogtune.config import apply_overrides
    from dialogtune.training.config import build_config, load_config, resolve_paths

    overrides = [f"{key}={json.dumps(value)}" for key, value in entry.set.items()]
    overrides.append(f"output_dir={json.dumps(str(output_dir))}")
    if isinstance(entry.config, dict):
        config = resolve_paths(build_config(apply_overrides(entry.config, overrides)))
    else:
        config = load_config(resolve_config_path(entry, experiment.base_dir), overrides)
    config.prompt = experiment.evaluation.prompt
    return config


def check_training_configs(experiment: ExperimentConfig) -> dict[str, Any]:
    """Build every variant's training config (validating it) without running anything."""
    out = Path(experiment.output_dir).expanduser().resolve()
    return {
        e.name: training_config(e, experiment, out / "train" / e.name) for e in experiment.models if e.trains
    }


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so that ``kill`` of
    ``dialogtune run`` (not only Ctrl-C, which reaches the whole process group) does not
    leave a training running on. Training is resumable, so being cut anywhere is safe."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _train_child(
    config: Any, resume: bool, overwrite: bool, progress: bool, errors: Any, parent: int
) -> None:
    from dialogtune.errors import DialogtuneError
    from dialogtune.training import train

    _die_with_parent(parent)
    try:
        train(config, resume=resume, overwrite=overwrite, progress=progress)
    except DialogtuneError as exc:  # the parent prints it as the usual one-line error
        errors.put(str(exc))
        raise SystemExit(2) from None


def _train_in_subprocess(config: Any, *, resume: bool, overwrite: bool, progress: bool) -> None:
    """Train in a fresh process: its peak memory and wall time are its own (``ru_maxrss`` is per
    process, so in-process evaluations would inherit the training peak), and every byte it held
    (weights, optimizer, allocator caches) is returned before the next stage starts."""
    context = multiprocessing.get_context("spawn")  # no fork: torch threads and CUDA do not survive it
    errors = context.SimpleQueue()
    child = context.Process(
        target=_train_child, args=(config, resume, overwrite, progress, errors, os.getpid())
    )
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:
        child.terminate()
        child.join()
        raise
    if child.exitcode != 0:
        if not errors.empty():
            raise DialogtuneError(errors.get())
        raise RuntimeError(
            f"training into {config.output_dir} failed (exit code {child.exitcode}); see above"
        )


def _saved_training_config(path: Path) -> Any:
    """A stage's saved training config, with keys added to the config since filled with their
    defaults: a finished run is still recognised after an upgrade that added settings."""
    if not path.exists():
        return None
    raw = read_yaml(path, DataError)
    from dialogtune.errors import ConfigError
    from dialogtune.training.config import build_config

    try:
        return _normalised(build_config(raw).to_dict())
    except ConfigError:  # made by another version in a way this one cannot read: not the same run
        return _normalised(raw)


def _train_stage(
    entry: ModelEntry,
    experiment: ExperimentConfig,
    out: Path,
    force: bool,
    log: Log,
    progress: bool | None,
    isolate: bool,
) -> tuple[StageOutcome, dict[str, Any], Any]:
    stage_dir = out / "train" / entry.name
    config = training_config(entry, experiment, stage_dir)
    resolved = _normalised(config.to_dict())
    key = stage_key({k: v for k, v in resolved.items() if k != "output_dir"})
    stage = read_stage(stage_dir)
    finished = (stage_dir / "metadata.json").is_file()
    # Where the run was written is not part of what it is: a stage folder copied or moved from
    # another experiment (its config.yaml naming the old place) is still the same training.
    saved = _saved_training_config(stage_dir / "config.yaml")
    if saved is not None:
        saved = {**saved, "output_dir": resolved.get("output_dir")}
    started = time.perf_counter()
    if not force and stage.get("key") == key and finished:
        log(f"[train {entry.name}] reused (stage key {key})")
        return StageOutcome("train", entry.name, stage_dir, key, True, 0.0), stage, config
    if not force and finished and saved == resolved:  # finished, but stopped before stage.json
        log(f"[train {entry.name}] finished earlier; adopting it (stage key {key})")
        return (
            StageOutcome("train", entry.name, stage_dir, key, True, 0.0),
            write_stage(stage_dir, "train", key, resolved),
            config,
        )
    (stage_dir / STAGE_FILE).unlink(missing_ok=True)  # never leave a marker for old weights
    resume = not force and not finished and saved == resolved
    log(
        f"[train {entry.name}] {'resuming' if resume else 'training'} {config.method} on {config.model} "
        f"-> {stage_dir}"
    )
    if isolate:
        _train_in_subprocess(config, resume=resume, overwrite=not resume, progress=progress is not False)
    else:
        from dialogtune.training import train

        del train(config, resume=resume, overwrite=not resume, progress=progress is not False).loaded
        gc.collect()
    stage = write_stage(stage_dir, "train", key, resolved)
    return (
        StageOutcome("train", entry.name, stage_dir, key, False, time.perf_counter() - started),
        stage,
        config,
    )


# ---- evaluation ------------------------------------------------------------------------------


def _eval_stage(
    name: str,
    model: str,
    adapter: str | None,
    weights: dict[str, Any],
    experiment: ExperimentConfig,
    records: list[Record],
    fingerprint: str,
    out: Path,
    force: bool,
    log: Log,
    progress: bool | None,
) -> StageOutcome:
    from dialogtune.experiments.evaluate import evaluate_to_dir
    from dialogtune.models.inference import load_for_inference

    spec = experiment.evaluation
    stage_dir = out / "eval" / name
    settings = _normalised(spec.to_dict())
    key = stage_key({"weights": weights, "evaluation": settings, "data_fingerprint": fingerprint})
    stage = read_stage(stage_dir)
    split = spec.data.split
    complete = (stage_dir / "metrics" / f"{split}.json").is_file() and (
        stage_dir / "predictions" / f"{split}.jsonl"
    ).is_file()
    if not force and stage.get("key") == key and complete:
        log(f"[eval {name}] reused (stage key {key})")
        return StageOutcome("eval", name, stage_dir, key, True, 0.0)
    if stage:  # a finished evaluation with other settings: its files must not mix with the new ones
        remove_tree(stage_dir)
    started = time.perf_counter()
    log(
        f"[eval {name}] generating for {len(records)} dialogues with {model}"
        + (f" + adapter {adapter}" if adapter else "")
    )
    # The inference path of `dialogtune evaluate`: generation.precision, the adapter merged when its
    # method allows, so a stage and the verb give the same numbers.
    loaded = load_for_inference(
        model, adapter=adapter, precision=spec.generation.precision, device=spec.device
    )
    # The stage folder is the runner's own: an evaluation with other settings in it is replaced.
    metrics = evaluate_to_dir(loaded, records, spec, stage_dir, overwrite=True, progress=progress)
    del loaded
    gc.collect()
    write_stage(stage_dir, "eval", key, {"weights": weights, **settings})
    log(
        f"[eval {name}] rouge1={metrics['rouge1']['mean']:.4f} rougeL={metrics['rougeL']['mean']:.4f}"
        if "rouge1" in metrics and "rougeL" in metrics
        else f"[eval {name}] done"
    )
    return StageOutcome("eval", name, stage_dir, key, False, time.perf_counter() - started)


# ---- the whole experiment --------------------------------------------------------------------


def _check_leak(config: Any, experiment: ExperimentConfig) -> str | None:
    """Training on the dialogues we evaluate on would inflate the scores: say so."""
    from dialogtune.data.config import DataConfig

    ev: DataConfig = experiment.evaluation.data
    train_source = Path(config.data.source)
    eval_source = (
        Path(ev.source).expanduser().resolve() if Path(ev.source).expanduser().exists() else Path(ev.source)
    )
    if train_source == eval_source and config.data.train.split == ev.split:
        return f"variant trains on the evaluation split '{ev.split}' of {ev.source}: its scores are inflated"
    return None


def _write_manifest(out: Path, experiment: ExperimentConfig, runs: list[dict[str, Any]]) -> None:
    write_json(
        out / EXPERIMENT_MANIFEST, {"name": experiment.name, "runs": runs, "report": "report/report.html"}
    )


def run_experiment(
    experiment: ExperimentConfig,
    *,
    force: bool = False,
    progress: bool | None = None,
    log: Log = _stderr,
    isolate_training: bool = True,
) -> ExperimentResult:
    """Train, evaluate and report; reuses finished stages (see the module docstring).

    ``isolate_training`` runs each training in its own process (honest memory and time figures);
    ``False`` trains in this process, which is quicker to start (tests, tiny models).
    """
    from dialogtune.data import data_fingerprint, load_records
    from dialogtune.report import ReportOptions, load_runs, write_report
    from dialogtune.runinfo import write_yaml

    out = Path(experiment.output_dir).expanduser().resolve()
    check_training_configs(experiment)  # a typo in the last variant fails now, not after hours of training
    claim_output_dir(out, "experiment", overwrite=False, what="output_dir")  # never into a user's folder
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "experiment")
    write_yaml(out / "experiment.yaml", _normalised(experiment.to_dict()))
    result = ExperimentResult(output_dir=out)
    records = load_records(experiment.evaluation.data, require_references=True)
    fingerprint = data_fingerprint(records)
    log(
        f"experiment '{experiment.name}': {len(experiment.models)} models, {len(records)} evaluation dialogues "
        f"(fingerprint {fingerprint}) -> {out}"
    )
    manifest: list[dict[str, Any]] = []
    for entry in experiment.models:
        adapter: str | None = None
        if entry.trains:
            outcome, stage, config = _train_stage(
                entry, experiment, out, force, log, progress, isolate_training
            )
            result.stages.append(outcome)
            if (warning := _check_leak(config, experiment)) is not None:
                result.warnings.append(f"{entry.name}: {warning}")
                log(f"warning: {entry.name}: {warning}")
            method = get_method(config.method)
            model, adapter = method.inference_inputs(config.model, outcome.path / method.weights_folder)
            # The trained files themselves name the weights: a retrained variant re-evaluates, an
            # adopted or reused one (even under a newer config layout) does not.
            from dialogtune.models.fingerprint import digest, folder_fingerprint

            weights = {"files": digest(folder_fingerprint(adapter or model))}
        else:
            model = str(entry.model)
            weights = {"model": model}
        # Every model sees the same records, generation settings and prompt: only the weights differ.
        result.stages.append(
            _eval_stage(
                entry.name,
                model,
                adapter,
                weights,
                experiment,
                records,
                fingerprint,
                out,
                force,
                log,
                progress,
            )
        )
        manifest.append(
            {
                "name": entry.name,
                "path": f"eval/{entry.name}",
                "method": "trained" if entry.trains else "zero-shot",
                "train_dir": f"train/{entry.name}" if entry.trains else None,
            }
        )
        _write_manifest(out, experiment, manifest)
    report = experiment.report
    options = ReportOptions(
        n_disagree=report.examples,
        n_random=report.random_examples,
        seed=report.seed,
        n_resamples=report.n_resamples,
        title=report.title or f"{experiment.name}: comparison",
    )
    runs = load_runs([out / m["path"] for m in manifest], names=[m["name"] for m in manifest])
    result.report = write_report(runs, out / "report", options)
    log(f"report: {result.report['html']}")
    return result
