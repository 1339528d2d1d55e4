"""Length-grouped batches that stay grouped on small datasets, in a random batch order.

transformers' ``LengthGroupedSampler`` shuffles, cuts the data into "megabatches" of 50
batches, sorts each by length and emits them in order. For fewer than 200 batches' worth
of examples it shrinks the megabatches so there are at least four of them — on the small
datasets a CPU run trains on, that means megabatches of 2-12 batches and much padding:
measured with SmolLM2's tokenizer on DialogSum, batches of 4 carry 23% padding for 32
examples and 11% for the quickstart's 195 (batches of 8), against 6.5% and 3.4% when the
megabatch is the whole (small) dataset. It also emits each megabatch longest-first, a
descending-length ramp every 50 batches.

Here megabatches are always up to 50 batches (the whole dataset when it is smaller), and
the batches are then shuffled across the epoch (the fairseq way), with the longest batch
first so an out-of-memory error shows at step 1, not hours in. Randomness comes from the
same place as transformers' sampler (the global torch RNG, or ``generator``), so the
Trainer's seeding and its resume-by-skipping-batches work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

MEGABATCH_BATCHES = 50  # as transformers: how many batches are sorted together


def grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    generator: torch.Generator | None = None,
    megabatch_batches: int = MEGABATCH_BATCHES,
) -> list[int]:
    """An order of ``range(len(lengths))`` in which every ``batch_size`` consecutive indices
    have similar lengths; the batches come in random order, the longest first."""
    if batch_size < 1 or megabatch_batches < 1:
        raise ValueError("batch_size and megabatch_batches must be >= 1")
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * megabatch_batches
    batches: list[list[int]] = []
    for start in range(0, len(shuffled), size):
        # Stable sort of a random permutation: equal lengths stay in random order.
        mega = sorted(shuffled[start : start + size], key=lambda i: lengths[i], reverse=True)
        batches += [mega[i : i + batch_size] for i in range(0, len(mega), batch_size)]
    # Only the very last batch can be short; it stays last so that slicing the flat order
    # into batch_size chunks (what the DataLoader does) gives back exactly these batches.
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    order = torch.randperm(len(batches), generator=generator).tolist()
    batches = [batches[i] for i in order] + tail
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        if len(batches[longest]) == batch_size or len(batches) == 1:
            batches[0], batches[longest] = batches[longest], batches[0]
    return [i for batch in batches for i in batch]


class LengthGroupedBatches(Sampler[int]):
    """A drop-in for transformers' ``LengthGroupedSampler`` (see the module docstring)."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, generator: torch.Generator | None = None
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(grouped_indices(self.lengths, self.batch_size, self.generator))


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """The share of a padded batch's positions that are padding, over the whole order."""
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / padded if padded else 0.0
