"""Static batches through transformers' ``generate``: beam search, and encoder-decoder models.

Prompts are sorted by length so that each batch holds prompts of similar length (little
padding) and outputs return in the caller's order. In fp32, greedy batched outputs equal
one-at-a-time outputs (tested); in bf16 the padding changes the rounding (see
:mod:`dialogtune.generation.ragged`, which decoder-only models use instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dialogtune.generation.settings import GenerationSettings
from dialogtune.models.loading import LoadedModel


def generated_lengths(part: torch.Tensor, stop_ids: set[int]) -> list[int]:
    """Real generated tokens per row: up to and including the first stop token (padding after
    it is not generation)."""
    if part.numel() == 0:
        return [0] * part.shape[0]
    stops = torch.isin(part, torch.tensor(sorted(stop_ids), dtype=part.dtype, device=part.device))
    first = stops.int().argmax(dim=1)
    return torch.where(stops.any(dim=1), first + 1, part.shape[1]).tolist()


def generate_static(
    loaded: LoadedModel,
    encoded: list[list[int]],
    order: list[int],
    settings: GenerationSettings,
    stop_ids: set[int],
    *,
    on_batch: Callable[[list[int], list[str], list[int]], None],
    adapter_names: Sequence[str] | None = None,
) -> None:
    """Generate for ``encoded`` prompts in batches of ``order``; ``on_batch(indices, texts, tokens)``."""
    tok = loaded.tokenizer
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
            part = loaded.kind.generated_part(output, batch["input_ids"].shape[1])
            lengths = generated_lengths(part, stop_ids)
            # Cut each row before its first stop token: an EOS that is not a "special" token (a
            # chat model's end-of-turn, say) would otherwise survive skip_special_tokens.
            kept = [
                row[: n - 1] if n and int(row[n - 1]) in stop_ids else row[:n]
                for row, n in zip(part, lengths)
            ]
            texts = [tok.decode(row, skip_special_tokens=True).strip() for row in kept]
            on_batch(indices, texts, lengths)
