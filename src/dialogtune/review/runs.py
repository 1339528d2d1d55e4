"""What a review compares: the runs' summaries of the same dialogues, checked and fingerprinted.

``review_set(paths)`` reads evaluation run directories (or experiment directories, expanded to
their evaluation stages) with the report's :func:`~dialogtune.report.collect.load_runs`, checks
that every run summarised exactly the same dialogues, and returns the models' summaries plus
two fingerprints: one per model (its name and every summary it wrote) and one for the whole
review. A review database records the latter, so it refuses to collect votes for other runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dialogtune.errors import ConfigError, DataError
from dialogtune.io import fingerprint_texts

if TYPE_CHECKING:
    from dialogtune.report.collect import RunSummary


@dataclass(frozen=True)
class Item:
    """One dialogue under review and its reference summaries (the harness rater reads them)."""

    id: str
    dialogue: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class ModelOutputs:
    """One run's summaries, by dialogue id, with their ROUGE-L (for the human-vs-ROUGE table)."""

    name: str
    path: str
    summaries: dict[str, str]
    rouge_l: dict[str, float]
    fingerprint: str


@dataclass(frozen=True)
class ReviewSet:
    """The runs of one review: same dialogues, several models."""

    items: list[Item]  # every shared dialogue, in the first run's order
    models: list[ModelOutputs]
    data_fingerprint: str
    key: str = field(init=False)

    def __post_init__(self) -> None:
        # Order-free: the same runs given in another order are the same review.
        parts = [self.data_fingerprint, *sorted(m.fingerprint for m in self.models)]
        object.__setattr__(self, "key", fingerprint_texts(parts))

    def sample(self, n: int | None, seed: int) -> list[Item]:
        """``n`` dialogues drawn with ``seed`` (all when ``n`` is None), in a seeded random order.

        The order is the order new raters meet the dialogues, so any prefix of the review is
        itself a random sample.
        """
        chosen = list(self.items)
        random.Random(seed).shuffle(chosen)
        return chosen if n is None else chosen[:n]


def _model_fingerprint(name: str, ids: Sequence[str], summaries: dict[str, str]) -> str:
    return fingerprint_texts([name, *(part for i in ids for part in (i, summaries[i]))])


def review_set(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> ReviewSet:
    """Read and check the runs to review.

    Raises:
        DataError: a directory is not an evaluation run, or the runs did not summarise the same
            dialogues (ids, dialogue texts, references or recorded data fingerprints differ).
        ConfigError: fewer than two runs.
    """
    from dialogtune.report.collect import load_runs

    runs = load_runs(paths, names=names)
    if len(runs) < 2:
        raise ConfigError(
            f"a review compares at least two runs, got {len(runs)}: {', '.join(map(str, paths))}"
        )
    first = runs[0]
    first_ids = list(first.rows_by_id)
    for run in runs[1:]:
        ids = set(run.rows_by_id)
        if ids != set(first_ids):
            shared = len(ids & set(first_ids))
            raise DataError(
                f"runs summarised different dialogues: {first.name} has {len(first_ids)}, {run.name} has "
                f"{len(ids)} ({shared} shared); a review needs the same dialogues in every run"
            )
        for i in first_ids:
            a, b = first.rows_by_id[i], run.rows_by_id[i]
            if a.get("dialogue") != b.get("dialogue") or list(a["references"]) != list(b["references"]):
                raise DataError(
                    f"runs {first.name} and {run.name} have different text for dialogue '{i}': "
                    "a review needs the same dialogues in every run"
                )
    recorded = {r.name: _recorded_fingerprint(r) for r in runs}
    known = {fp for fp in recorded.values() if fp}
    if len(known) > 1:
        listed = ", ".join(f"{name}: {fp}" for name, fp in recorded.items())
        raise DataError(f"runs were evaluated on different data (fingerprints {listed})")

    items = [
        Item(i, str(first.rows_by_id[i].get("dialogue", "")), tuple(first.rows_by_id[i]["references"]))
        for i in first_ids
    ]
    data_fp = fingerprint_texts(
        part
        for item in items
        for part in (item.id, item.dialogue, str(len(item.references)), *item.references)
    )
    models = [_outputs(run, first_ids) for run in runs]
    paths_seen = [m.path for m in models]
    twice = next((p for p in paths_seen if paths_seen.count(p) > 1), None)
    if twice is not None:
        raise ConfigError(f"run directory {twice} is given twice: a review compares different runs")
    return ReviewSet(items=items, models=models, data_fingerprint=data_fp)


def _recorded_fingerprint(run: RunSummary) -> str | None:
    from dialogtune.report.collect import lookup

    return lookup(run.metrics, "data.fingerprint") or run.metadata.get("data_fingerprint")


def _outputs(run: RunSummary, ids: list[str]) -> ModelOutputs:
    summaries = {i: str(run.rows_by_id[i]["prediction"]) for i in ids}
    rouge_l = {i: run.scores_by_id.get(i, {}).get("rougeL") for i in ids}
    missing = [i for i, value in rouge_l.items() if value is None]
    if missing:  # a hand-made predictions file without per-example scores: score it now
        from dialogtune.evaluation.rouge import RougeSettings, score_examples

        scored = score_examples(
            [summaries[i] for i in missing],
            [run.rows_by_id[i]["references"] for i in missing],
            RougeSettings(rouge_types=("rougeL",)),
        )
        rouge_l.update({i: s.mean["rougeL"] for i, s in zip(missing, scored)})
    return ModelOutputs(
        name=run.name,
        path=str(Path(run.path).resolve()),
        summaries=summaries,
        rouge_l={i: float(v) for i, v in rouge_l.items()},
        fingerprint=_model_fingerprint(run.name, ids, summaries),
    )
