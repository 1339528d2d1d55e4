"""Length-grouped batches: a permutation, grouped also on small datasets, shuffled batch order."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices

from dialogtune.training.dataset import ExampleDataset
from dialogtune.training.sampler import LengthGroupedBatches, grouped_indices, padding_fraction
from dialogtune.training.trainer import DialogTrainer


def dialogue_lengths(n: int, seed: int = 0) -> list[int]:
    """Token counts spread like DialogSum's (~100-600, right-skewed)."""
    g = torch.Generator().manual_seed(seed)
    return [int(x) for x in (torch.randn(n, generator=g) * 0.4 + 5.55).exp().clamp(60, 700)]


@pytest.mark.parametrize("n,batch_size", [(0, 4), (1, 4), (3, 4), (32, 4), (33, 4), (195, 8), (2077, 8)])
def test_every_index_exactly_once(n: int, batch_size: int) -> None:
    order = grouped_indices(dialogue_lengths(n), batch_size, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(n))


@pytest.mark.parametrize("n,batch_size", [(32, 4), (64, 4), (195, 8)])
def test_small_datasets_get_less_padding_than_transformers_sampler(n: int, batch_size: int) -> None:
    lengths = dialogue_lengths(n)
    ours = [
        padding_fraction(
            lengths, grouped_indices(lengths, batch_size, torch.Generator().manual_seed(s)), batch_size
        )
        for s in range(5)
    ]
    theirs = [
        padding_fraction(
            lengths,
            get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(s)),
            batch_size,
        )
        for s in range(5)
    ]
    assert max(ours) < 0.6 * min(theirs)
    assert max(ours) < 0.1


def test_the_short_batch_stays_last_and_the_longest_full_batch_comes_first() -> None:
    lengths = dialogue_lengths(103)
    order = grouped_indices(lengths, 4, torch.Generator().manual_seed(3))
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert [len(b) for b in batches] == [4] * 25 + [3]
    assert max(lengths[i] for i in batches[0]) == max(max(lengths[i] for i in b) for b in batches[:-1])


def test_batches_come_in_random_order_not_a_descending_ramp() -> None:
    lengths = dialogue_lengths(400)
    order = grouped_indices(lengths, 4, torch.Generator().manual_seed(0))
    maxima = [max(lengths[i] for i in order[j : j + 4]) for j in range(0, 400, 4)]
    descending_steps = sum(a >= b for a, b in zip(maxima[1:], maxima[2:]))
    assert 0.25 < descending_steps / (len(maxima) - 2) < 0.75  # a ramp would be ~1.0


def test_seeded_orders_repeat_and_differ_between_seeds() -> None:
    lengths = dialogue_lengths(64)
    first = grouped_indices(lengths, 4, torch.Generator().manual_seed(7))
    assert grouped_indices(lengths, 4, torch.Generator().manual_seed(7)) == first
    assert grouped_indices(lengths, 4, torch.Generator().manual_seed(8)) != first
    torch.manual_seed(5)  # no generator: the global RNG, which the Trainer seeds
    global_first = list(LengthGroupedBatches(lengths, 4))
    torch.manual_seed(5)
    assert list(LengthGroupedBatches(lengths, 4)) == global_first


@pytest.mark.parametrize("strategy,grouped", [("group_by_length", True), ("random", False)])
def test_the_trainer_uses_it_for_group_by_length(
    tmp_path, one_torch_thread, strategy: str, grouped: bool
) -> None:
    from dialogtune.models.loading import load_model

    loaded = load_model("random:tiny-llama")
    dataset = ExampleDataset([{"input_ids": [5] * n, "labels": [5] * n} for n in (3, 9, 4, 8, 2, 7, 6, 5)])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        train_sampling_strategy=strategy,
        use_cpu=True,
        report_to="none",
    )
    sampler = DialogTrainer(model=loaded.model, args=args, train_dataset=dataset)._get_train_sampler()
    assert isinstance(sampler, LengthGroupedBatches) == grouped
    if grouped:
        assert sampler.batch_size == 4  # one optimizer step's examples, as transformers groups
        order = list(sampler)
        assert sorted(order) == list(range(8))
        # Sorted into two groups of four: lengths {9,8,7,6} and {5,4,3,2}.
        groups = [{len(dataset.examples[i]["input_ids"]) for i in order[j : j + 4]} for j in (0, 4)]
        assert groups == [{9, 8, 7, 6}, {5, 4, 3, 2}]
