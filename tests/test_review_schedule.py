"""Pair scheduling for the review page: balanced coverage, no repeats per rater, fair sides."""

from __future__ import annotations

import itertools
from collections import Counter

from dialogtune.review.schedule import choose_next, model_pairs, sides

ITEMS = [f"d{i}" for i in range(10)]


def _simulate(n_models: int, raters: list[str], draws_each: int):
    pairs = model_pairs(n_models)
    seen = {r: set() for r in raters}
    counts: Counter = Counter()
    history = []
    for _ in range(draws_each):
        for rater in raters:  # interleaved, as several people working at once
            chosen = choose_next(ITEMS, pairs, seen[rater], counts)
            if chosen is None:
                continue
            assert chosen not in seen[rater], "a rater was shown the same comparison twice"
            seen[rater].add(chosen)
            counts[chosen] += 1
            history.append((rater, chosen))
            per_pair = Counter(pair for (_, pair), n in counts.items() for _ in range(n))
            assert max(per_pair.values()) - min(per_pair.get(p, 0) for p in pairs) <= 1
    return pairs, seen, counts, history


def test_model_pairs() -> None:
    assert model_pairs(2) == [(0, 1)]
    assert model_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_coverage_is_balanced_across_model_pairs_and_raters_never_repeat() -> None:
    pairs, seen, counts, _ = _simulate(n_models=4, raters=["ann", "bob", "cy"], draws_each=25)
    assert all(len(s) == 25 for s in seen.values())
    per_pair = Counter(pair for (_, pair), n in counts.items() for _ in range(n))
    assert sorted(per_pair.values()) == [12, 12, 12, 13, 13, 13]  # 75 draws over 6 pairs
    # Coverage spreads over dialogues before a comparison is shown a second time.
    assert max(counts.values()) - min(counts.get((i, p), 0) for i in ITEMS for p in pairs) <= 1


def test_a_rater_gets_every_comparison_exactly_once_then_none() -> None:
    pairs = model_pairs(3)
    seen: set = set()
    counts: Counter = Counter()
    while (chosen := choose_next(ITEMS, pairs, seen, counts)) is not None:
        assert chosen not in seen
        seen.add(chosen)
        counts[chosen] += 1
    assert seen == set(itertools.product(ITEMS, pairs))


def test_a_rater_who_stops_early_has_seen_many_dialogues() -> None:
    _, _, _, history = _simulate(n_models=3, raters=["ann"], draws_each=10)
    assert len({item for _, (item, _) in history}) == 10  # ten different dialogues, not 3 + 3 + 3 + 1


def test_sides_are_seeded_and_fair() -> None:
    assert sides(0, "ann", "d1", (0, 1)) == sides(0, "ann", "d1", (0, 1))
    flips = [sides(0, f"r{i}", f"d{j}", (0, 1)) == (1, 0) for i in range(40) for j in range(50)]
    assert 0.45 < sum(flips) / len(flips) < 0.55
    assert {sides(s, "ann", "d1", (2, 3)) for s in range(40)} == {(2, 3), (3, 2)}
