"""Qualitative side-by-side examples: where the models disagree most, then a seeded random sample.

Disagreement is the spread (max minus min) of the per-example ROUGE across models: the dialogues
where one model wins clearly show what fine-tuning changed. The random sample keeps the reader from
seeing only extremes. Both use the dialogues every run scored, so each example has every model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dialogtune.report.collect import RunSummary, same_example
from dialogtune.report.document import ExampleBlock, ExampleOutput


def common_ids(runs: Sequence[RunSummary]) -> list[str]:
    """Ids every run predicted for the same dialogue and references, in the first run's order.

    An id alone is not enough: two evaluations on other data may share ids (``validation_0``)
    for different dialogues, and pairing those would compare unrelated summaries.
    """
    first = runs[0].rows_by_id
    return [i for i in first if all(same_example(first[i], r.rows_by_id.get(i)) for r in runs[1:])]


def disagreement(runs: Sequence[RunSummary], example_id: str, metric: str) -> float:
    values = [r.scores_by_id.get(example_id, {}).get(metric, 0.0) for r in runs]
    return max(values) - min(values)


def select_examples(
    runs: Sequence[RunSummary],
    n_disagree: int = 3,
    n_random: int = 3,
    seed: int = 0,
    metric: str = "rougeL",
) -> list[tuple[str, str]]:
    """``(id, reason)`` for the examples to show: most disagreement first, then a random sample."""
    ids = common_ids(runs)
    chosen: list[tuple[str, str]] = []
    if len(runs) > 1 and n_disagree > 0:
        # Stable sort: ties keep dataset order, so the choice is reproducible.
        ranked = sorted(ids, key=lambda i: -disagreement(runs, i, metric))
        for example_id in ranked[:n_disagree]:
            spread = disagreement(runs, example_id, metric)
            if spread <= 0:
                break  # all agree from here on: the random sample shows those better
            chosen.append((example_id, f"models disagree most ({metric} spread {100 * spread:.1f} points)"))
    taken = {i for i, _ in chosen}
    rest = [i for i in ids if i not in taken]
    for example_id in random.Random(seed).sample(rest, min(n_random, len(rest))):
        chosen.append((example_id, f"random sample (seed {seed})"))
    return chosen


def example_blocks(
    runs: Sequence[RunSummary],
    n_disagree: int = 3,
    n_random: int = 3,
    seed: int = 0,
    metric: str = "rougeL",
) -> list[ExampleBlock]:
    blocks = []
    for example_id, reason in select_examples(runs, n_disagree, n_random, seed, metric):
        first = runs[0].rows_by_id[example_id]
        outputs = [
            ExampleOutput(
                model=r.display_name,
                prediction=str(r.rows_by_id[example_id].get("prediction", "")),
                scores=dict(r.rows_by_id[example_id].get("scores") or {}),
            )
            for r in runs
        ]
        blocks.append(
            ExampleBlock(
                id=example_id,
                reason=reason,
                dialogue=str(first.get("dialogue", "")),
                references=[str(x) for x in first.get("references", [])],
                outputs=outputs,
            )
        )
    return blocks
