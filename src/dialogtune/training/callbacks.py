"""What runs beside the Trainer: ROUGE on a few dialogues, throughput, TensorBoard.

The ROUGE probe is called from :class:`DialogTrainer`'s evaluation loop (not from
``on_evaluate``) so that its numbers are in the metrics the Trainer logs, compares for the
best checkpoint and hands to early stopping.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from dialogtune.data.records import Record
from dialogtune.evaluation.metrics import compute_metrics
from dialogtune.evaluation.rouge import RougeSettings
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate
from dialogtune.training.config import ROUGE_METRICS


@dataclasses.dataclass
class RougeProbe:
    """Greedy summaries for a few validation dialogues, scored with the project's ROUGE."""

    loaded: LoadedModel  # tokenizer, kind and spec; the model comes from the Trainer at each call
    records: Sequence[Record]
    settings: GenerationSettings
    template: PromptTemplate
    bf16_autocast: bool = False  # generate as the model trains (needed with bf16 frozen weights)
    last_predictions: list[str] = dataclasses.field(default_factory=list)
    # The last call's ROUGE with 95% bootstrap CIs and n (written to metadata.json as last_probe).
    last_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()  # no dropout while generating
        try:
            probe = dataclasses.replace(self.loaded, model=model)
            device = next(model.parameters()).device.type
            with torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16_autocast):
                # One process: forking a trainer (DDP groups, data workers) for a probe of a few
                # dozen dialogues is not worth its risk.
                settings = dataclasses.replace(self.settings, processes=1)
                result = generate(
                    probe, [r.dialogue for r in self.records], settings, self.template, progress=False
                )
        finally:
            model.train(was_training)
        self.last_predictions = result.texts
        # The Trainer logs the means; the CIs are kept for metadata.json (1,000 resamples of a
        # few dozen dialogues take milliseconds).
        metrics, _ = compute_metrics(
            result.texts,
            [list(r.references) for r in self.records],
            RougeSettings(),
            n_resamples=1000,
            seed=0,
        )
        self.last_metrics = {
            "n": metrics["n"],
            **{name: {k: round(v, 6) for k, v in metrics[name].items()} for name in ROUGE_METRICS},
        }
        return {name: round(metrics[name]["mean"], 6) for name in ROUGE_METRICS}


class ThroughputCallback(TrainerCallback):
    """Examples/s and tokens/s of this session's training steps (a resumed run counts only
    its own part; time spent in evaluations is left out)."""

    def __init__(self, examples_per_step: int) -> None:
        self.examples_per_step = examples_per_step
        self.result: dict[str, Any] = {}
        self._start: tuple[float, int, int] = (0.0, 0, 0)
        self._eval_seconds = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._start = (time.perf_counter(), state.global_step, state.num_input_tokens_seen or 0)
        self._eval_seconds = 0.0

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        self._eval_seconds += float((metrics or {}).get("eval_runtime", 0.0))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        began, step, tokens = self._start
        seconds = max(time.perf_counter() - began - self._eval_seconds, 1e-9)
        steps = state.global_step - step
        self.result = {
            "steps": steps,
            "seconds": round(seconds, 2),
            "eval_seconds": round(self._eval_seconds, 2),
            "seconds_per_step": round(seconds / steps, 3) if steps else None,
            "examples_per_s": round(steps * self.examples_per_step / seconds, 3),
            # Non-padding input tokens, summed over all processes.
            "tokens_per_s": round(((state.num_input_tokens_seen or 0) - tokens) / seconds, 1),
        }


def tensorboard_callback(log_dir: Path) -> TrainerCallback | None:
    """transformers' TensorBoard logger writing to ``log_dir`` (None if tensorboard is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))
