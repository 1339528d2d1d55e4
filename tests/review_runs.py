"""Evaluation run directories for the review tests, written with dialogtune's own writers.

Three "models" of clearly different quality on the same dialogues: ``good`` copies the reference,
``vague`` says something generic, ``inventive`` names a person absent from the dialogue.
"""

from __future__ import annotations

import time
from pathlib import Path

from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint
from dialogtune.evaluation.metrics import compute_metrics
from dialogtune.evaluation.predictions import prediction_row, write_predictions
from dialogtune.io import write_json
from dialogtune.runinfo import run_metadata, write_yaml

TOPICS = ["tea", "the gym", "a new job", "the weather", "a party", "the train", "a book", "lunch"]
FRIENDS = ["Jimmy", "Mary", "Ann", "Bob", "Lucy", "Sam"]


def records(n: int = 12, variant: str = "") -> list[Record]:
    out = []
    for i in range(n):
        topic, friend = TOPICS[i % len(TOPICS)], FRIENDS[i % len(FRIENDS)]
        dialogue = (
            f"#Person1#: Hi {friend}, shall we talk about {topic}{variant}?\n"
            f"#Person2#: Yes, at {i + 1} o'clock.\n#Person1#: Great, see you."
        )
        out.append(
            Record(f"dev_{i}", dialogue, (f"#Person1# and {friend} will talk about {topic} at {i + 1}.",))
        )
    return out


def summaries(style: str, recs: list[Record]) -> list[str]:
    if style == "good":
        return [r.references[0] for r in recs]
    if style == "vague":
        return ["Two people have a conversation." for _ in recs]
    if style == "inventive":
        return [f"Zorblax tells Quentin about {TOPICS[i % len(TOPICS)]}." for i, _ in enumerate(recs)]
    raise ValueError(style)


def write_run(path: Path, style: str, recs: list[Record] | None = None) -> Path:
    """An evaluation run directory in the layout `dialogtune evaluate` writes."""
    recs = recs if recs is not None else records()
    predictions = summaries(style, recs)
    metrics, per_example = compute_metrics(predictions, [list(r.references) for r in recs], n_resamples=50)
    metrics["data"] = {"source": "tiny", "split": "validation", "fingerprint": data_fingerprint(recs)}
    metrics["model"] = {"model": f"hand-made/{style}", "random_weights": False}
    write_yaml(
        path / "config.yaml", {"model": f"hand-made/{style}", "adapter": None, "random_weights": False}
    )
    write_predictions(
        path / "predictions" / "validation.jsonl",
        [prediction_row(r, p, e) for r, p, e in zip(recs, predictions, per_example)],
    )
    write_json(path / "metrics" / "validation.json", metrics)
    write_json(path / "metadata.json", run_metadata(time.time(), data_fingerprint=data_fingerprint(recs)))
    return path


def write_runs(root: Path, styles: tuple[str, ...] = ("good", "vague", "inventive")) -> list[Path]:
    recs = records()
    return [write_run(root / style, style, recs) for style in styles]
