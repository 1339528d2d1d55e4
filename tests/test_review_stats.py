"""Review statistics on constructed votes: win rates, Bradley-Terry, kappas, ROUGE comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dialogtune.review.stats import (
    agreement,
    bradley_terry,
    cohen_kappa,
    fit_bradley_terry,
    fleiss_kappa,
    pair_results,
    summarize,
)
from dialogtune.review.store import Vote


def vote(a: str, b: str, winner: str | None, rater: str = "ann", dialogue: str = "d", **kw) -> Vote:
    """``a`` on the left, ``b`` on the right; ``winner`` one of them or None for a tie."""
    choice = "tie" if winner is None else "left" if winner == a else "right"
    return Vote(0, rater, kw.get("kind", "human"), dialogue, a, b, choice,
                tuple(kw.get("fl", ())), tuple(kw.get("fr", ())), 1.0, 0.0)  # fmt: skip


def many(a: str, b: str, wins: int, ties: int, losses: int, rater: str = "ann") -> list[Vote]:
    out = [vote(a, b, a, rater, f"w{i}") for i in range(wins)]
    out += [vote(b, a, None, rater, f"t{i}") for i in range(ties)]  # sides vary
    return out + [vote(b, a, b, rater, f"l{i}") for i in range(losses)]


def test_a_clearly_preferred_model_wins_with_a_ci_excluding_half() -> None:
    (result,) = pair_results(many("strong", "weak", 24, 3, 3), ["strong", "weak"], 2000, 0)
    assert (result.first_wins, result.ties, result.second_wins, result.n) == (24, 3, 3, 30)
    assert result.rate == pytest.approx((24 + 1.5) / 30)
    assert 0.5 < result.ci_low < result.rate < result.ci_high <= 1.0
    assert result.verdict == "strong better"
    # Listing the models the other way round mirrors the numbers.
    (mirror,) = pair_results(many("strong", "weak", 24, 3, 3), ["weak", "strong"], 2000, 0)
    assert mirror.rate == pytest.approx(1 - result.rate) and mirror.verdict == "strong better"


def test_an_even_split_is_no_clear_difference() -> None:
    (result,) = pair_results(many("a", "b", 10, 4, 10), ["a", "b"], 2000, 0)
    assert result.rate == pytest.approx(0.5)
    assert result.ci_low < 0.5 < result.ci_high and result.verdict == "no clear difference"


def test_bradley_terry_two_models_by_hand() -> None:
    # A beats B 3 times, B beats A once, plus one virtual tie: strengths 3.5 : 1.5.
    scores = fit_bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]))
    assert scores[0] - scores[1] == pytest.approx(math.log(3.5 / 1.5), abs=1e-6)
    assert scores.sum() == pytest.approx(0.0, abs=1e-9)


def test_bradley_terry_recovers_known_strengths() -> None:
    rng = np.random.default_rng(0)
    truth = {"a": 1.0, "b": 0.0, "c": -1.0}
    votes = []
    for i in range(3000):
        x, y = rng.choice(list(truth), size=2, replace=False)
        p_x = 1 / (1 + math.exp(truth[y] - truth[x]))
        votes.append(vote(x, y, x if rng.random() < p_x else y, dialogue=str(i)))
    ranking = bradley_terry(votes, list(truth), 200, 0)
    assert [r.model for r in ranking] == ["a", "b", "c"]
    for r in ranking:
        assert r.score == pytest.approx(truth[r.model], abs=0.15)
        assert r.ci_low <= r.score <= r.ci_high
        assert (r.rank_low, r.rank_high) == (r.rank, r.rank)


def test_bradley_terry_ranking_order_and_separated_intervals() -> None:
    votes = many("a", "b", 16, 0, 4) + many("b", "c", 16, 0, 4) + many("a", "c", 18, 0, 2)
    ranking = bradley_terry(votes, ["c", "b", "a"], 500, 0)
    assert [r.model for r in ranking] == ["a", "b", "c"] and [r.rank for r in ranking] == [1, 2, 3]
    assert ranking[0].ci_low > ranking[2].ci_high


def test_cohen_kappa_by_hand() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement is 1: undefined
    assert cohen_kappa(["x", "y"], ["x", "y"]) == pytest.approx(1.0)


def test_fleiss_kappa_matches_the_textbook_example() -> None:
    # Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories -> kappa 0.210.
    rows = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    table = [{str(j): n for j, n in enumerate(row)} for row in rows]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    assert fleiss_kappa([{"a": 1}]) is None  # one rating per item: nothing to agree on


def test_agreement_between_raters_uses_the_same_comparisons() -> None:
    same = [vote("a", "b", "a", r, f"d{i}") for r in ("ann", "bob") for i in range(6)]
    same += [vote("b", "a", None, r, "t") for r in ("ann", "bob")]
    # cy sees the same comparisons with sides swapped and always disagrees with ann.
    cy = [vote("b", "a", "b", "cy", f"d{i}") for i in range(6)] + [vote("a", "b", "a", "cy", "t")]
    result = agreement(same + cy, ["a", "b"])
    kappas = {(k.a, k.b): k for k in result.pairs}
    assert kappas[("ann", "bob")].kappa == pytest.approx(1.0) and kappas[("ann", "bob")].shared == 7
    assert kappas[("ann", "cy")].kappa < 0
    assert result.fleiss_items == 7 and result.raters == 3 and result.fleiss is not None


def test_summarize_flags_and_rouge_comparison() -> None:
    votes = [
        vote("good", "bad", "good", dialogue=f"d{i}", fr=["absent_person"] if i < 3 else []) for i in range(8)
    ]
    rouge = {"good": {f"d{i}": 0.6 for i in range(8)}, "bad": {f"d{i}": 0.1 for i in range(8)}}
    stats = summarize(votes, ["good", "bad", "never-judged"], rouge, n_resamples=200)
    assert [r.model for r in stats.ranking] == ["good", "bad"]  # a model nobody judged is not ranked
    flags = {f.model: f for f in stats.flags}
    assert flags["bad"].judged == 8 and flags["bad"].counts["absent_person"] == 3
    assert flags["good"].counts["absent_person"] == 0
    assert stats.rouge.agree == stats.rouge.decisive == 8
    assert stats.rouge.spearman == pytest.approx(1.0) and stats.rouge.kendall == pytest.approx(1.0)
    assert stats.rouge.mean_rouge_l == {"good": pytest.approx(0.6), "bad": pytest.approx(0.1)}
    assert stats.to_dict()["votes"] == 8


def test_rank_ranges_widen_when_resamples_tie() -> None:
    # One decisive vote among ties: many resamples hold only ties, where the two are level.
    votes = [vote("a", "b", "a", dialogue="w")] + [vote("a", "b", None, dialogue=f"t{i}") for i in range(3)]
    ranking = bradley_terry(votes, ["a", "b"], 500, 0)
    assert [r.model for r in ranking] == ["a", "b"]
    assert [(r.rank_low, r.rank_high) for r in ranking] == [(1, 2), (1, 2)]
