"""The training recipe: any method (full, LoRA, DoRA, IA3, prompt tuning), seq2seq or causal.

Reads top to bottom: set up the run directory, model, data and Trainer → train → save the
weights atomically → write metadata. The model kind (seq2seq/causal) only shows through
:mod:`dialogtune.models.kinds` (prompts, masking, padding side); the method only through its
object (:mod:`dialogtune.methods`): how it wraps the model, how it counts and stores the trained
parameters, whether the base may be stored in bf16 and whether the selective loss applies.

Run directory (DESIGN.md)::

    config.yaml      resolved config
    metadata.json    versions, git commit, data fingerprints, wall time, peak memory,
                     trainable parameters, examples/s and tokens/s, best checkpoint,
                     the last evaluation's ROUGE probe with CIs (last_probe)
    adapter/         PEFT methods: adapter safetensors + tokenizer + dialogtune_base.json
    model/           full: model safetensors + tokenizer
                     (both with dialogtune_inference.json: how to prompt the result)
    logs/            TensorBoard events + history.json (every logged loss and metric)
    checkpoints/     while training (kept only with training.keep_checkpoints)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint, load_records
from dialogtune.errors import ConfigError
from dialogtune.io import write_json
from dialogtune.methods import get_method
from dialogtune.models.contract import InferenceContract
from dialogtune.models.loading import LoadedModel, load_model
from dialogtune.models.params import format_parameters
from dialogtune.ownership import (
    check_output_path,
    is_empty_dir,
    mark,
    output_kind,
    refuse_protected,
    remove_tree,
)
from dialogtune.runinfo import run_metadata, write_yaml
from dialogtune.training.callbacks import RougeProbe, ThroughputCallback, tensorboard_callback
from dialogtune.training.checkpoint import (
    CHECKPOINTS,
    latest_checkpoint,
    remove_stale_temporaries,
    save_weights,
)
from dialogtune.training.collator import make_collator
from dialogtune.training.config import TrainConfig, parse_yaml
from dialogtune.training.dataset import ExampleDataset, encode_records, token_counts
from dialogtune.training.loss import supports_selective_loss
from dialogtune.training.precision import (
    resolve_precision,
    store_frozen_weights,
    unfreeze_linears_to_fp32,
)
from dialogtune.training.trainer import DialogTrainer, TrainingDiverged


@dataclass
class TrainResult:
    run_dir: Path
    loaded: LoadedModel  # the trained model (best checkpoint if eval.load_best), in eval mode
    metadata: dict[str, Any]


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run one training config end to end; see the module docstring for what is written.

    Args:
        resume: continue from the newest complete checkpoint in ``output_dir`` (same config only).
        overwrite: replace a run already in ``output_dir``.
        callbacks: extra ``TrainerCallback`` objects (after dialogtune's own).
    """
    started = time.time()
    run_dir = Path(config.output_dir)
    _check_run_dir(run_dir, config, resume=resume, overwrite=overwrite)

    # ---- setup: model ------------------------------------------------------------------------
    # fp32 master weights on the CPU; the Trainer moves them to the device and autocasts.
    loaded = load_model(config.model, dtype="fp32", device="cpu")
    precision = resolve_precision(
        config.training.precision, loaded.model.config.model_type, _use_cuda(config)
    )
    method = get_method(config.method)
    set_seed(config.seed)  # adapters' initial weights (LoRA's A matrices) come from the global RNG
    loaded.model = method.apply(loaded.model, config.method_settings, loaded.kind, tokenizer=loaded.tokenizer)
    parameters = method.count_parameters(loaded.model)
    frozen = store_frozen_weights(
        loaded.model,
        config.training.frozen_weights,
        method=config.method,
        precision=precision,
        sharded=bool(config.training.fsdp or config.training.deepspeed),
    )

    # ---- setup: data -------------------------------------------------------------------------
    train_records = load_records(config.data.data_config("train"), require_references=True)
    eval_records = (
        load_records(config.data.data_config("eval"), require_references=True)
        if config.data.eval is not None
        else []
    )
    lengths = {
        "max_dialogue_tokens": config.data.max_dialogue_tokens,
        "max_target_tokens": config.data.max_target_tokens,
    }
    train_set = ExampleDataset(encode_records(loaded, train_records, config.prompt, **lengths))
    eval_set = (
        ExampleDataset(encode_records(loaded, eval_records, config.prompt, **lengths))
        if eval_records
        else None
    )

    # ---- setup: trainer ----------------------------------------------------------------------
    args = training_arguments(config, precision, progress=progress)
    main = args.process_index == 0
    _barrier(args)  # every process has checked the run dir before the main one writes to it
    if main:
        _prepare_run_dir(run_dir, config, overwrite=overwrite)
        print(format_parameters(parameters))
    # Virtual tokens (prompt tuning) move the learned positions the selective loss picks.
    selective = (
        config.training.selective_loss
        and not method.prepends_tokens
        and supports_selective_loss(loaded.model)
    )
    throughput = ThroughputCallback(
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    callbacks = [throughput, *(callbacks or [])]
    if main and (board := tensorboard_callback(run_dir / "logs")) is not None:
        callbacks.append(board)
    if config.eval.early_stopping_patience is not None:
        callbacks.append(
            EarlyStoppingCallback(config.eval.early_stopping_patience, config.eval.early_stopping_threshold)
        )
    probe = _rouge_probe(loaded, eval_records, config, precision)
    trainer = DialogTrainer(
        model=loaded.model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=make_collator(loaded.tokenizer),
        processing_class=loaded.tokenizer,
        callbacks=callbacks,
        selective_loss=selective,
        compile_blocks=config.training.compile,
        rouge_probe=probe,
    )

    # ---- train ---------------------------------------------------------------------------------
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS, remove_incomplete=main) if resume else None
    if resume and main:
        print(f"resuming from {checkpoint}" if checkpoint else "no complete checkpoint: starting from step 0")
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except TrainingDiverged as exc:
        kept = latest_checkpoint(run_dir / CHECKPOINTS, remove_incomplete=False)
        where = f"the last good checkpoint is {kept} (kept)" if kept else "no checkpoint had been saved yet"
        raise TrainingDiverged(f"{exc}; {where}; lower training.learning_rate and train again") from None
    loaded.model = trainer.accelerator.unwrap_model(trainer.model)  # best weights when eval.load_best
    loaded.model.eval()
    if frozen == "bf16":
        # Callers may run the returned model without autocast; its base keeps the bf16 rounding
        # (the saved adapter is what loads onto the exact base).
        unfreeze_linears_to_fp32(loaded.model)

    # ---- save ----------------------------------------------------------------------------------
    # Every process takes part: under FSDP / ZeRO-3 this gathers the sharded weights.
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    metadata: dict[str, Any] = {}
    if main:
        save_weights(
            loaded,
            run_dir,
            method,
            contract=InferenceContract(
                prompt=config.prompt,
                max_dialogue_tokens=config.data.max_dialogue_tokens,
                max_target_tokens=config.data.max_target_tokens,
                base_model=config.model,
                method=config.method,
            ),
            state_dict=state_dict,
        )
        write_json(run_dir / "logs" / "history.json", trainer.state.log_history)
        metadata = run_metadata(
            started,
            model=loaded.describe(),
            method=config.method,
            method_settings=method.describe(config.method_settings, loaded.model.config.model_type),
            parameters=parameters,
            precision=precision,
            frozen_weights=frozen,
            loss="selective" if selective else "model",
            world_size=args.world_size,
            resumed_from=checkpoint.name if checkpoint else None,
            data_fingerprint={
                "train": data_fingerprint(train_records),
                "eval": data_fingerprint(eval_records) if eval_records else None,
            },
            data={
                "train": token_counts(train_set.examples),
                "eval": token_counts(eval_set.examples) if eval_set else None,
            },
            train={
                "global_step": trainer.state.global_step,
                "epoch": trainer.state.epoch,
                "train_loss": round(output.training_loss, 6),
                **throughput.result,
            },
            best={
                "metric": f"eval_{config.eval.metric}",
                "value": trainer.state.best_metric,
                "step": trainer.state.best_global_step,
            }
            if args.load_best_model_at_end
            else None,
            last_eval=_last_eval(trainer.state.log_history),
            # The last evaluation's ROUGE probe with 95% bootstrap CIs and its n (dialogues).
            last_probe=probe.last_metrics if probe is not None and probe.last_metrics else None,
        )
        write_json(run_dir / "metadata.json", metadata)  # last: its presence means "finished"
        if not config.training.keep_checkpoints:
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    _barrier(args)
    return TrainResult(run_dir=run_dir, loaded=loaded, metadata=metadata)


def _use_cuda(config: TrainConfig) -> bool:
    return config.device != "cpu" and torch.cuda.is_available()


def training_arguments(config: TrainConfig, precision: str, *, progress: bool = True) -> TrainingArguments:
    """The TrainingArguments a config means (the one place that maps our keys onto theirs)."""
    t, e = config.training, config.eval
    save_strategy = e.strategy if e.enabled else "steps"
    load_best = e.enabled and e.load_best
    return TrainingArguments(
        output_dir=str(Path(config.output_dir) / CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing,
        neftune_noise_alpha=t.neftune_noise_alpha,
        optim=t.optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=e.strategy,
        eval_steps=e.steps,
        eval_on_start=e.enabled and e.on_start,
        save_strategy=save_strategy,
        save_steps=t.save_steps or e.steps or 100,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=load_best,
        metric_for_best_model=e.metric if load_best else None,
        greater_is_better=e.greater_is_better if load_best else None,
        seed=config.seed,
        data_seed=config.seed,
        prediction_loss_only=True,
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=t.num_workers,
        use_cpu=not _use_cuda(config),
        fsdp=t.fsdp,
        deepspeed=t.deepspeed,
        report_to="none",  # TensorBoard is added as a callback that writes to logs/
        disable_tqdm=not progress,
    )


def _rouge_probe(
    loaded: LoadedModel, records: list[Record], config: TrainConfig, precision: str
) -> RougeProbe | None:
    if not config.eval.enabled or config.eval.rouge_dialogues < 1 or not records:
        return None
    # Prompts are cut as in training, so ROUGE measures what the model was trained on.
    settings = replace(config.eval.generation, max_dialogue_tokens=config.data.max_dialogue_tokens)
    return RougeProbe(
        loaded=loaded,
        records=records[: config.eval.rouge_dialogues],
        settings=settings,
        template=config.prompt,
        bf16_autocast=precision == "bf16",
    )


def _last_eval(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    evals = [row for row in history if "eval_loss" in row]
    return evals[-1] if evals else None


def _barrier(args: TrainingArguments) -> None:
    if args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ---- the run directory ---------------------------------------------------------------------------


def _check_run_dir(run_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a folder holding another run needs --resume (same config) or --overwrite,
    and only a folder that is recognisably a dialogtune training run may be replaced."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    check_output_path(run_dir, "output_dir")
    if not run_dir.exists() or is_empty_dir(run_dir):
        if resume:
            raise ConfigError(f"nothing to resume: {run_dir} holds no run")
        return
    kind = output_kind(run_dir)
    if kind != "train":
        holds = f"a dialogtune {kind} output" if kind else "files dialogtune did not write"
        raise ConfigError(
            f"output_dir {run_dir} holds {holds}; choose another output_dir (nothing was deleted)"
        )
    if overwrite:
        refuse_protected(run_dir)
        return
    saved = run_dir / "config.yaml"
    if not resume:
        raise ConfigError(
            f"{run_dir} already holds a run; use --resume to continue it or --overwrite to replace it"
        )
    if (run_dir / "metadata.json").is_file():
        raise ConfigError(f"the run in {run_dir} already finished; use --overwrite to train it again")
    try:
        before = parse_yaml(saved.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot resume {run_dir}: its config.yaml is unreadable ({exc})") from None
    changed = _differences(before, config.to_dict())
    if changed:
        raise ConfigError(
            f"cannot resume {run_dir} with a different config (changed: {', '.join(changed[:5])})"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _prepare_run_dir(run_dir: Path, config: TrainConfig, *, overwrite: bool) -> None:
    if overwrite and run_dir.exists() and not is_empty_dir(run_dir):
        remove_tree(run_dir)  # recognised as a training run by _check_run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    mark(run_dir, "train")
    write_yaml(run_dir / "config.yaml", config.to_dict())
