"""``dialogtune review export``: every vote as one CSV row, written atomically."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from dialogtune.io import atomic_open
from dialogtune.review.store import ReviewStore

COLUMNS = (
    "vote_id",
    "voted_at",
    "rater",
    "rater_kind",
    "dialogue_id",
    "left_model",
    "right_model",
    "choice",
    "winner",
    "flags_left",
    "flags_right",
    "seconds",
)


def write_votes_csv(store: ReviewStore, path: str | Path) -> int:
    """Write the votes of ``store`` to ``path``; returns how many.

    ``rater_kind`` is ``human`` or ``harness`` (an automatic rater, not human judgement);
    ``choice`` is the side (left = summary A), ``winner`` the model it names or ``tie``; flags
    are ``;``-separated keys (see ``store.FLAGS``); ``voted_at`` is UTC.
    """
    votes = store.votes()
    with atomic_open(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for v in votes:
            writer.writerow(
                [
                    v.id,
                    datetime.fromtimestamp(v.voted_at, tz=timezone.utc).isoformat(timespec="seconds"),
                    v.rater,
                    v.kind,
                    v.dialogue_id,
                    v.left,
                    v.right,
                    v.choice,
                    v.winner or "tie",
                    ";".join(v.flags_left),
                    ";".join(v.flags_right),
                    "" if v.seconds is None else f"{v.seconds:.1f}",
                ]
            )
    return len(votes)
