"""Which pair a rater judges next: balanced coverage, no repeats, sides shuffled.

A *comparison* is one dialogue and one unordered pair of models. For each request the rater
gets, among the comparisons they have not been shown yet:

1. the model pair shown least often so far (over all raters), so every model pair gets
   comparable coverage whether one rater works through the review or ten do;
2. within it, the dialogue whose comparison was shown least often, so coverage spreads over
   dialogues before anyone sees a comparison twice (then raters overlap, which is what
   inter-rater agreement needs);
3. among those, a dialogue this rater has met least often with other pairs, so a rater who
   stops early has judged many dialogues rather than a few dialogues many times;
4. remaining ties broken by the review's seeded dialogue order and the model-pair order.

Which side each summary appears on is a seeded coin per (rater, dialogue, pair): fair,
reproducible, and unknown to the rater. The functions are pure; the store feeds them counts
read inside its write transaction.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence, Set

Pair = tuple[int, int]  # model indices, low < high
Comparison = tuple[str, Pair]  # (dialogue id, model pair)


def model_pairs(n_models: int) -> list[Pair]:
    """Every unordered pair of ``n_models`` models: (0, 1), (0, 2), ..., (1, 2), ..."""
    return list(itertools.combinations(range(n_models), 2))


def choose_next(
    items: Sequence[str],
    pairs: Sequence[Pair],
    seen: Set[Comparison],
    shown_counts: Mapping[Comparison, int],
) -> Comparison | None:
    """The next comparison for a rater who has seen ``seen``; None when they have seen them all.

    Args:
        items: dialogue ids in the review's (seeded) order.
        pairs: the model pairs under review.
        seen: comparisons this rater was already shown (never shown again).
        shown_counts: how often each comparison was shown to anyone so far.
    """
    pair_counts = {pair: 0 for pair in pairs}
    for (_, pair), count in shown_counts.items():
        if pair in pair_counts:
            pair_counts[pair] += count
    mine = Counter(item for item, _ in seen)
    for pair in sorted(pairs, key=lambda p: pair_counts[p]):  # stable: ties keep the pair order
        fresh = [item for item in items if (item, pair) not in seen]
        if fresh:  # min is stable too: ties keep the review's dialogue order
            return min(fresh, key=lambda item: (shown_counts.get((item, pair), 0), mine[item])), pair
    return None


def sides(seed: int, rater: str, dialogue_id: str, pair: Pair) -> tuple[int, int]:
    """``(left, right)`` model indices: a seeded coin flip per rater, dialogue and pair."""
    # random.Random(str) hashes the string with SHA-512: the same on every run and platform.
    flip = random.Random(f"{seed}\x00{rater}\x00{dialogue_id}\x00{pair[0]}\x00{pair[1]}").random() < 0.5
    return (pair[1], pair[0]) if flip else pair
