"""What the votes say: win rates with CIs, a Bradley–Terry ranking, flags, agreement, and ROUGE.

- **Win rate** of the first model of a pair: (wins + ties / 2) / votes, with a seeded percentile
  bootstrap CI over the votes (``evaluation.bootstrap``). The pair differs when the CI excludes 0.5.
- **Bradley–Terry** (Bradley & Terry 1952): P(i beats j) = s_i / (s_i + s_j), fitted with
  Hunter's MM algorithm (Hunter 2004, "MM algorithms for generalized Bradley-Terry models", eq. 3).
  A tie counts half a win for each side, and every pair of models gets one virtual tie (a weak
  prior: strengths stay finite when a model never wins, and models never compared directly stay
  comparable). Scores are log-strengths centred on 0, so exp(score_i - score_j) is the odds that
  i beats j. CIs and rank ranges come from refitting on bootstrap resamples of the votes.
- **Agreement** on comparisons (a dialogue and a model pair) judged by several raters, as
  first-better / tie / second-better: Cohen's kappa per pair of raters (Cohen 1960) and Fleiss'
  kappa over all raters (Fleiss 1971, with a varying number of raters per item).
- **Human vs ROUGE**: Spearman's rho and Kendall's tau (scipy) between the Bradley–Terry scores and
  the models' mean ROUGE-L on the voted dialogues, and how often the summary a vote preferred also
  has the higher ROUGE-L.
"""

from __future__ import annotations

import itertools
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dialogtune.evaluation.bootstrap import bootstrap_ci
from dialogtune.review.store import FLAGS, Vote

_BT_PRIOR_TIES = 1.0  # virtual ties per pair of models
_BT_TOL = 1e-9
_BT_MAX_ITER = 2000


@dataclass(frozen=True)
class PairResult:
    first: str
    second: str
    n: int
    first_wins: int
    ties: int
    second_wins: int
    rate: float  # first's win rate, ties counting half
    ci_low: float
    ci_high: float

    @property
    def verdict(self) -> str:
        if self.ci_low > 0.5:
            return f"{self.first} better"
        if self.ci_high < 0.5:
            return f"{self.second} better"
        return "no clear difference"


@dataclass(frozen=True)
class Ranked:
    model: str
    score: float  # centred log-strength
    ci_low: float
    ci_high: float
    rank: int  # 1 = best
    rank_low: int  # 95% bootstrap range of the rank
    rank_high: int


@dataclass(frozen=True)
class FlagRate:
    model: str
    judged: int  # summaries of this model that received a vote
    counts: dict[str, int]


@dataclass(frozen=True)
class RaterPairKappa:
    a: str
    b: str
    shared: int  # comparisons both judged
    kappa: float | None  # None: undefined (both always gave the same answer)


@dataclass(frozen=True)
class Agreement:
    pairs: list[RaterPairKappa]
    fleiss: float | None
    fleiss_items: int  # comparisons judged by at least two raters
    raters: int


@dataclass(frozen=True)
class RougeComparison:
    mean_rouge_l: dict[str, float]  # per model, over the dialogues it was judged on
    spearman: float | None
    kendall: float | None
    agree: int  # decisive votes whose winner also has the higher ROUGE-L
    decisive: int  # votes with a winner, on summaries whose ROUGE-L differs


@dataclass(frozen=True)
class ReviewStats:
    votes: int
    raters: int
    models: list[str]
    pairs: list[PairResult]
    ranking: list[Ranked]
    flags: list[FlagRate]
    agreement: Agreement
    rouge: RougeComparison | None
    n_resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_results(
    votes: Sequence[Vote], models: Sequence[str], n_resamples: int, seed: int
) -> list[PairResult]:
    """Win/tie/loss per model pair (pairs in ``models`` order; only pairs with votes)."""
    results = []
    for first, second in itertools.combinations(models, 2):
        mine = [v for v in votes if {v.left, v.right} == {first, second}]
        if not mine:
            continue
        values = np.array([1.0 if v.winner == first else 0.0 if v.winner == second else 0.5 for v in mine])
        low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        results.append(
            PairResult(
                first,
                second,
                len(mine),
                int(np.sum(values == 1.0)),
                int(np.sum(values == 0.5)),
                int(np.sum(values == 0.0)),
                float(values.mean()),
                low,
                high,
            )
        )
    return results


def _contributions(votes: Sequence[Vote], models: Sequence[str]) -> np.ndarray:
    """One row per vote: its flattened K x K win matrix (ties half a win each)."""
    k = len(models)
    index = {m: i for i, m in enumerate(models)}
    rows = np.zeros((len(votes), k * k))
    for row, vote in zip(rows, votes):
        left, right = index[vote.left], index[vote.right]
        if vote.choice == "left":
            row[left * k + right] = 1.0
        elif vote.choice == "right":
            row[right * k + left] = 1.0
        else:
            row[left * k + right] = row[right * k + left] = 0.5
    return rows


def fit_bradley_terry(wins: np.ndarray) -> np.ndarray:
    """Centred log-strengths from ``wins[..., i, j]`` (i's wins over j); batched over leading axes."""
    k = wins.shape[-1]
    wins = wins + (_BT_PRIOR_TIES / 2) * (1.0 - np.eye(k))
    games = wins + np.swapaxes(wins, -1, -2)
    total_wins = wins.sum(axis=-1)
    log_p = np.zeros(wins.shape[:-1])
    for _ in range(_BT_MAX_ITER):
        p = np.exp(log_p)
        # Hunter's MM update: p_i <- W_i / sum_j n_ij / (p_i + p_j).
        denominator = (games / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = np.log(total_wins / denominator)
        new -= new.mean(axis=-1, keepdims=True)
        change = np.max(np.abs(new - log_p)) if new.size else 0.0
        log_p = new
        if change < _BT_TOL:
            break
    return log_p


def bradley_terry(votes: Sequence[Vote], models: Sequence[str], n_resamples: int, seed: int) -> list[Ranked]:
    """Models ranked by Bradley–Terry score, best first, with bootstrap CIs of score and rank."""
    k = len(models)
    rows = _contributions(votes, models)
    scores = fit_bradley_terry(rows.sum(axis=0).reshape(k, k))
    rng = np.random.default_rng(seed)
    n = len(votes)
    # Resample votes: each resample's win matrix is (how often each vote was drawn) @ contributions.
    drawn = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    boot = fit_bradley_terry((drawn @ rows).reshape(n_resamples, k, k))
    # A model's best rank: 1 + models clearly ahead; its worst: models level or ahead (ties, e.g. in a
    # resample of only tied votes, widen the range instead of being broken by list order).
    ahead = boot[:, None, :] > boot[:, :, None] + 1e-9
    level = np.abs(boot[:, None, :] - boot[:, :, None]) <= 1e-9
    best = 1 + ahead.sum(axis=2)
    worst = (ahead | level).sum(axis=2)
    order = np.argsort(-scores, kind="stable")
    return [
        Ranked(
            model=models[i],
            score=float(scores[i]),
            ci_low=float(np.percentile(boot[:, i], 2.5)),
            ci_high=float(np.percentile(boot[:, i], 97.5)),
            rank=position + 1,
            rank_low=int(np.percentile(best[:, i], 2.5, method="lower")),
            rank_high=int(np.percentile(worst[:, i], 97.5, method="higher")),
        )
        for position, i in enumerate(order)
    ]


def flag_rates(votes: Sequence[Vote], models: Sequence[str]) -> list[FlagRate]:
    judged: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {m: Counter() for m in models}
    for vote in votes:
        for model in (vote.left, vote.right):
            judged[model] += 1
            counts[model].update(vote.flags_of(model))
    return [FlagRate(m, judged[m], {f: counts[m][f] for f in FLAGS}) for m in models]


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when chance agreement is 1."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two equally long, non-empty label sequences")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[label] * cb[label] for label in ca) / (n * n)
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: Sequence[Mapping[str, int]]) -> float | None:
    """Fleiss' kappa from per-item label counts (items with fewer than 2 ratings are skipped)."""
    rows = [r for r in table if sum(r.values()) >= 2]
    if not rows:
        return None
    labels = sorted({label for r in rows for label in r})
    counts = np.array([[r.get(label, 0) for label in labels] for r in rows], dtype=np.float64)
    per_item = counts.sum(axis=1)
    # P_i: agreeing rater pairs among all rater pairs of item i (Fleiss 1971, eq. 2).
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (per_item * (per_item - 1))
    p_label = counts.sum(axis=0) / per_item.sum()
    expected = float(np.sum(p_label**2))
    return None if expected >= 1.0 else float((p_item.mean() - expected) / (1.0 - expected))


def _labels(votes: Sequence[Vote], models: Sequence[str]) -> dict[tuple[str, str, str], dict[str, str]]:
    """``{(dialogue, first model, second model): {rater: 'first' | 'tie' | 'second'}}``."""
    rank = {m: i for i, m in enumerate(models)}
    out: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for vote in votes:
        first, second = sorted((vote.left, vote.right), key=rank.__getitem__)
        label = "tie" if vote.winner is None else "first" if vote.winner == first else "second"
        out[(vote.dialogue_id, first, second)][vote.rater] = label
    return out


def agreement(votes: Sequence[Vote], models: Sequence[str]) -> Agreement:
    labels = _labels(votes, models)
    raters = sorted({v.rater for v in votes})
    pairs = []
    for a, b in itertools.combinations(raters, 2):
        shared = [item for item, by in labels.items() if a in by and b in by]
        if shared:
            kappa = cohen_kappa([labels[i][a] for i in shared], [labels[i][b] for i in shared])
            pairs.append(RaterPairKappa(a, b, len(shared), kappa))
    multi = [Counter(by.values()) for by in labels.values() if len(by) >= 2]
    return Agreement(pairs, fleiss_kappa(multi), len(multi), len(raters))


def rouge_comparison(
    votes: Sequence[Vote], ranking: Sequence[Ranked], rouge_l: Mapping[str, Mapping[str, float]]
) -> RougeComparison:
    judged: dict[str, set[str]] = defaultdict(set)
    agree = decisive = 0
    for vote in votes:
        judged[vote.left].add(vote.dialogue_id)
        judged[vote.right].add(vote.dialogue_id)
        a, b = rouge_l[vote.left][vote.dialogue_id], rouge_l[vote.right][vote.dialogue_id]
        if vote.winner is not None and a != b:
            decisive += 1
            agree += (vote.winner == vote.left) == (a > b)
    means = {r.model: float(np.mean([rouge_l[r.model][d] for d in judged[r.model]])) for r in ranking}
    human = [r.score for r in ranking]
    machine = [means[r.model] for r in ranking]
    spearman = kendall = None
    if len(ranking) >= 2:
        from scipy import stats

        with warnings.catch_warnings():  # constant input: scipy warns and returns nan
            warnings.simplefilter("ignore")
            spearman = _finite(stats.spearmanr(human, machine).statistic)
            kendall = _finite(stats.kendalltau(human, machine).statistic)
    return RougeComparison(means, spearman, kendall, agree, decisive)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize(
    votes: Sequence[Vote],
    models: Sequence[str],
    rouge_l: Mapping[str, Mapping[str, float]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ReviewStats:
    """Every statistic of the report's review section, for one set of votes (e.g. one rater kind)."""
    if not votes:
        raise ValueError("no votes to summarise")
    voted = {m for v in votes for m in (v.left, v.right)}
    models = [m for m in models if m in voted]  # a model nobody judged yet has nothing to rank
    ranking = bradley_terry(votes, models, n_resamples, seed)
    return ReviewStats(
        votes=len(votes),
        raters=len({v.rater for v in votes}),
        models=list(models),
        pairs=pair_results(votes, models, n_resamples, seed),
        ranking=ranking,
        flags=flag_rates(votes, models),
        agreement=agreement(votes, models),
        rouge=rouge_comparison(votes, ranking, rouge_l) if rouge_l is not None else None,
        n_resamples=n_resamples,
        seed=seed,
    )
