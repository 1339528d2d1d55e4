"""Generation: prompts in, summaries out.

Decoder-only models (Llama, SmolLM, Qwen, Mistral) run in :mod:`~dialogtune.generation.engine`:
continuous batching whose outputs do not depend on the batch. Beam search and encoder-decoder
models (T5, BART) run in static length-sorted batches through transformers' ``generate``
(:mod:`~dialogtune.generation.batched`). Either way outputs come back in the caller's order,
with timing and honest token counts (generated tokens only, up to the end-of-sequence token).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from dialogtune.generation import engine, processes
from dialogtune.generation.batched import generate_static
from dialogtune.generation.settings import GenerationSettings
from dialogtune.models.kinds import truncate_dialogue
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate


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
    generated_tokens: int  # real tokens: each row up to and including its end-of-sequence token
    engine: str = "ragged"  # "ragged" (continuous batching) or "generate" (transformers' static batches)
    processes: int = 1  # engine processes that shared the work (dialogtune.generation.processes)


def stop_ids(loaded: LoadedModel) -> set[int]:
    """The token ids that end a summary: the generation config's EOS ids and the tokenizer's."""
    ids: set[int] = set()
    eos = loaded.model.generation_config.eos_token_id
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


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

    ``on_batch(indices, texts)`` is called as outputs finish (for incremental writes).
    ``adapter_names`` picks a LoRA adapter per dialogue (``"__base__"`` for none) on a
    PeftModel holding several: PEFT's mixed-adapter batches, used by the server.
    """
    settings = settings or GenerationSettings()
    template = template or PromptTemplate()
    prompts = build_prompts(loaded, dialogues, template, settings.max_dialogue_tokens)
    encoded = loaded.kind.encode_prompts(loaded.tokenizer, prompts) if prompts else []
    return generate_ids(
        loaded, encoded, settings, progress=progress, on_batch=on_batch, adapter_names=adapter_names
    )


def generate_ids(
    loaded: LoadedModel,
    encoded: list[list[int]],
    settings: GenerationSettings,
    *,
    progress: bool | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    adapter_names: Sequence[str] | None = None,
) -> GenerationResult:
    """:func:`generate` for prompts that are already token ids."""
    if adapter_names is not None and len(adapter_names) != len(encoded):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(encoded)} prompts")
    use_engine = settings.engine == "auto" and settings.num_beams == 1 and engine.supports(loaded.model)
    if not encoded:  # e.g. a resumed run whose every row was already done
        return GenerationResult([], 0.0, 0, 0, "ragged" if use_engine else "generate")
    order = list(range(len(encoded)))
    if settings.sort_by_length:
        # Longest first: the slowest work runs while the progress bar is fresh, and a memory
        # problem shows up at once rather than at the end.
        order.sort(key=lambda i: -len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    counted = [0]
    show = progress if progress is not None else len(encoded) > settings.batch_size
    bar = tqdm(total=len(encoded), desc="generating", unit="dlg", disable=not show)

    def finished(indices: list[int], outputs: list[str], lengths: list[int]) -> None:
        for i, text in zip(indices, outputs):
            texts[i] = text
        counted[0] += sum(lengths)
        if on_batch is not None:
            on_batch(indices, outputs)
        bar.update(len(indices))

    start = time.perf_counter()
    stops = stop_ids(loaded)
    count = 1
    try:
        if use_engine:
            count = _generate_ragged(loaded, encoded, order, settings, stops, finished, adapter_names)
        else:
            generate_static(
                loaded, encoded, order, settings, stops, on_batch=finished, adapter_names=adapter_names
            )
    finally:
        bar.close()
    return GenerationResult(
        texts=texts,
        seconds=time.perf_counter() - start,
        prompt_tokens=sum(len(e) for e in encoded),
        generated_tokens=counted[0],
        engine="ragged" if use_engine else "generate",
        processes=count,
    )


def _generate_ragged(
    loaded: LoadedModel,
    encoded: list[list[int]],
    order: list[int],
    settings: GenerationSettings,
    stops: set[int],
    finished: Callable[[list[int], list[str], list[int]], None],
    adapter_names: Sequence[str] | None,
) -> int:
    """Runs the engine (in several processes where that pays); returns how many ran."""
    requests = [
        engine.make_request(i, encoded[i], settings, None if adapter_names is None else adapter_names[i])
        for i in order
    ]
    tokenizer = loaded.tokenizer

    def done(index: int, tokens: list[int], stopped_by_eos: bool) -> None:
        text = tokenizer.decode(tokens[:-1] if stopped_by_eos else tokens, skip_special_tokens=True).strip()
        finished([index], [text], [len(tokens)])

    def make_engine() -> engine.RaggedEngine:
        return engine.RaggedEngine(
            loaded.model,
            stops,
            slots=settings.batch_size,
            per_row_adapters=adapter_names is not None,
            lookahead=settings.lookahead,
            draft_memory=settings.draft_memory,
        )

    longest = max(len(e) for e in encoded)
    memory = engine.cache_bytes(loaded.model, settings.batch_size, longest, settings.max_new_tokens)
    count = processes.resolve(settings, loaded.model, len(encoded), memory)
    if count > 1:
        processes.run(make_engine, requests, count, done)
    else:
        make_engine().run(requests, on_done=lambda r: done(r.index, r.tokens, r.stopped_by_eos))
    return count
