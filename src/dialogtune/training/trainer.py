"""transformers' Trainer with four additions: the selective causal loss, ROUGE at evaluation,
length grouping that also groups small datasets (:mod:`dialogtune.training.sampler`) and
regional compilation of the training step (:mod:`dialogtune.training.compile`).

Everything else (optimiser, schedule, accumulation, mixed precision, DDP/FSDP/DeepSpeed,
checkpoints, resume, early stopping) is the Trainer's own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import Trainer

from dialogtune.errors import ConfigError, DialogtuneError
from dialogtune.training.callbacks import RougeProbe
from dialogtune.training.compile import RegionalCompile
from dialogtune.training.loss import selective_causal_loss
from dialogtune.training.sampler import LengthGroupedBatches


class TrainingDiverged(DialogtuneError):
    """The loss or the gradient norm became NaN or infinite: training stops before the optimizer
    applies the step, so the weights (and every saved checkpoint) stay finite."""


def _finite(value: Any) -> bool:
    return value is None or math.isfinite(float(value))


class DialogTrainer(Trainer):
    """A ``Trainer`` for dialogue summarisation.

    Args:
        selective_loss: compute logits and loss only where labels are learned
            (see :mod:`dialogtune.training.loss`); only for models that support it.
        rouge_probe: if given, every evaluation also reports ``eval_rouge1`` ... on a few dialogues.
        compile_blocks: run training steps (forward and backward) with the model's repeated
            blocks compiled by ``torch.compile``; evaluation and generation stay eager.
    """

    def __init__(
        self,
        *args: Any,
        selective_loss: bool = False,
        rouge_probe: RougeProbe | None = None,
        compile_blocks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.selective_loss = selective_loss
        self.rouge_probe = rouge_probe
        self.regional_compile = RegionalCompile(self.model) if compile_blocks else None

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        loss = self._compiled_or_eager_step(model, inputs, num_items_in_batch)
        # The Trainer's own NaN filter only hides a bad loss from the logs and applies the step
        # anyway, which turns every weight into NaN. Stop before the optimizer sees it.
        if not _finite(loss.detach()):
            raise TrainingDiverged(
                f"training stopped at step {self.state.global_step + 1}: the loss became {float(loss):g} "
                f"(learning rate {self.args.learning_rate:g}); the step was not applied"
            )
        return loss

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # fp16's loss scaler expects (and skips) overflowing steps; every other precision must not.
        if not self.args.fp16 and not _finite(grad_norm):
            raise TrainingDiverged(
                f"training stopped at step {self.state.global_step + 1}: the gradient norm became "
                f"{float(grad_norm):g} (learning rate {self.args.learning_rate:g}); the step was not applied"
            )
        return grad_norm

    def _compiled_or_eager_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None
    ) -> torch.Tensor:
        if self.regional_compile is None:
            return super().training_step(model, inputs, num_items_in_batch)
        try:
            with self.regional_compile.active():
                return super().training_step(model, inputs, num_items_in_batch)
        except torch._dynamo.exc.BackendCompilerFailed as exc:  # e.g. no C++ compiler on the machine
            inner = getattr(exc, "inner_exception", None) or exc  # the compiler's own error
            lines = str(inner).strip().splitlines()
            reason = f"{type(inner).__name__}: {lines[0][:200]}" if lines else type(inner).__name__
            raise ConfigError(f"training.compile failed ({reason}); set training.compile=false") from exc

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        examples = getattr(dataset, "examples", None)  # dialogtune's ExampleDataset
        if self.args.train_sampling_strategy != "group_by_length" or examples is None:
            return super()._get_train_sampler(train_dataset)
        # Same batch size as transformers groups by: the examples of one optimizer step.
        return LengthGroupedBatches(
            [len(e["input_ids"]) for e in examples],
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        # Label smoothing shapes training only: the eval loss stays the plain cross-entropy, so
        # runs with different training.label_smoothing are compared on the same measure.
        smoothing = self.args.label_smoothing_factor if model.training else 0.0
        if not self.selective_loss or "labels" not in inputs:
            smoother = self.label_smoother
            if not model.training:
                self.label_smoother = None  # labels stay in the inputs: the model's own loss
            try:
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            finally:
                self.label_smoother = smoother
        loss = selective_causal_loss(model, inputs, num_items_in_batch, label_smoothing=smoothing)
        # Same scaling as Trainer.compute_loss: with token-weighted averaging across
        # processes, DDP's gradient mean must be undone (loss = local sum / global count).
        if (
            self.args.average_tokens_across_devices
            and self.model_accepts_loss_kwargs
            and num_items_in_batch is not None
        ):
            loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        if self.rouge_probe is not None and metric_key_prefix == "eval":
            # Added here, before Trainer.evaluate logs the metrics and runs the callbacks,
            # so best-checkpoint selection and early stopping can use ROUGE.
            scores = self.rouge_probe(self.model)
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores.items()})
        return output
