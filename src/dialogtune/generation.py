"""Batched, length-sorted generation.

Sorting prompts by token length before batching means each batch holds prompts of
similar length, so little compute is spent on padding; outputs are returned in the
caller's order. Greedy batched outputs equal one-at-a-time outputs (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from dialogtune.errors import ConfigError
from dialogtune.models.kinds import truncate_dialogue
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate
from dialogtune.seeds import check_seed

MAX_BEAMS = 256  # wider than any decoding uses; each beam costs a copy of the generation state
_MAX_INT = 2**31 - 1
_INT_FIELDS = ("max_new_tokens", "top_k", "no_repeat_ngram_size", "batch_size", "max_dialogue_tokens")


@dataclass
class GenerationSettings:
    """Decoding settings; greedy with the notebook's ``max_new_tokens=200`` by default."""

    max_new_tokens: int = 200
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    batch_size: int = 16
    max_dialogue_tokens: int | None = 1024
    sort_by_length: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "num_beams": self.num_beams >= 1,
            "temperature": self.temperature > 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= 0,
            "repetition_penalty": self.repetition_penalty > 0,
            "no_repeat_ngram_size": self.no_repeat_ngram_size >= 0,
            "batch_size": self.batch_size >= 1,
            "max_dialogue_tokens": self.max_dialogue_tokens is None or self.max_dialogue_tokens >= 1,
        }
        # Beyond these, torch's integer arguments overflow (a traceback), or memory runs out first.
        checks["num_beams"] = checks["num_beams"] and self.num_beams <= MAX_BEAMS
        for key in _INT_FIELDS:
            checks[key] = checks[key] and (getattr(self, key) or 0) <= _MAX_INT
        for key, ok in checks.items():
            value = getattr(self, key)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"generation.{key} has an invalid value: {value!r}")
        check_seed("generation.seed", self.seed)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # keep the model's sampling defaults from leaking into greedy runs (and warning)
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_prompts(
    loaded: LoadedModel, dialogues: Sequence[str], template: PromptTemplate, max_dialogue_tokens: int | None
) -> list[str]:
    tok = loaded.tokenizer
    return [
        loaded.kind.format_prompt(tok, truncate_dialogue(tok, d, max_dialogue_tokens), template)
        for d in dialogues
    ]


@dataclass
class GenerationResult:
    texts: list[str]
    seconds: float
    prompt_tokens: int
    generated_tokens: int


def generate(
    loaded: LoadedModel,
    dialogues: Sequence[str],
    settings: GenerationSettings | None = None,
    template: PromptTemplate | None = None,
    *,
    progress: bool | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    adapter_names: Sequence[str] | None = None,
) -> GenerationResult:
    """Summarize ``dialogues``; returns texts in input order plus timing and token counts.

    ``on_batch(indices, texts)`` is called after each batch (for incremental writes).
    ``adapter_names`` picks a LoRA adapter per dialogue (``"__base__"`` for none) on a
    PeftModel holding several: PEFT's mixed-adapter batches, used by the server.
    """
    if adapter_names is not None and len(adapter_names) != len(dialogues):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(dialogues)} dialogues")
    settings = settings or GenerationSettings()
    template = template or PromptTemplate()
    if not dialogues:  # e.g. a resumed run whose every row was already done
        return GenerationResult(texts=[], seconds=0.0, prompt_tokens=0, generated_tokens=0)
    tok = loaded.tokenizer
    prompts = build_prompts(loaded, dialogues, template, settings.max_dialogue_tokens)
    encoded = loaded.kind.encode_prompts(tok, prompts)
    order = list(range(len(encoded)))
    if settings.sort_by_length:
        # Longest first: the slowest batch runs while the progress bar is fresh, and
        # a memory problem shows up at once rather than at the end.
        order.sort(key=lambda i: -len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    generated_tokens = 0
    show = progress if progress is not None else len(encoded) > settings.batch_size
    bar = tqdm(total=len(encoded), desc="generating", unit="dlg", disable=not show)
    start = time.perf_counter()
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    with torch.inference_mode():
        for begin in range(0, len(order), settings.batch_size):
            indices = order[begin : begin + settings.batch_size]
            batch = tok.pad({"input_ids": [encoded[i] for i in indices]}, padding=True, return_tensors="pt")
            batch = {k: v.to(loaded.device) for k, v in batch.items()}
            # Rows are reordered by length, so the adapter names follow their rows.
            per_row = (
                {"adapter_names": [adapter_names[i] for i in indices]} if adapter_names is not None else {}
            )
            output = loaded.model.generate(
                **batch, **settings.generate_kwargs(), pad_token_id=tok.pad_token_id, **per_row
            )
            decoded = loaded.kind.decode_generated(tok, output, batch["input_ids"].shape[1])
            new_tokens = output.shape[1] - (
                batch["input_ids"].shape[1] if loaded.kind.name == "causal" else 0
            )
            generated_tokens += new_tokens * len(indices)
            for i, text in zip(indices, decoded):
                texts[i] = text
            if on_batch is not None:
                on_batch(indices, decoded)
            bar.update(len(indices))
    bar.close()
    return GenerationResult(
        texts=texts,
        seconds=time.perf_counter() - start,
        prompt_tokens=sum(len(e) for e in encoded),
        generated_tokens=generated_tokens,
    )
