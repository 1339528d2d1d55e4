"""Blind side-by-side review: people judge pairs of summaries on a web page, votes go to SQLite.

``review_set(run_dirs)`` reads and checks the runs, ``ReviewStore.create_or_open`` binds a
database to them, ``create_app(store)`` serves the page, and ``stats.summarize`` /
``report.review_section`` turn the votes into win rates, a Bradley–Terry ranking and agreement.
See docs/review.md.
"""

from dialogtune.review.runs import ReviewSet, review_set
from dialogtune.review.store import FLAGS, Refused, ReviewStore, Shown, Vote

__all__ = ["FLAGS", "Refused", "ReviewSet", "ReviewStore", "Shown", "Vote", "review_set"]
