"""The review database's schema, creation and checks (the store's SQL for votes is in ``store``).

Tables: ``meta`` (format, schema version, the review key and sample), ``models`` (name, run
directory, fingerprint), ``items`` (the dialogues under review, in the seeded order raters meet
them), ``outputs`` (each model's summary of each dialogue and its ROUGE-L), ``raters`` (name and
kind: ``human`` or ``harness``), ``shown`` (which pair each rater was shown, which model on which
side, under a random token) and ``votes`` (one per shown pair at most).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from dialogtune.errors import DataError
from dialogtune.review.runs import ReviewSet

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE);
CREATE TABLE items (dialogue_id TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE,
    dialogue TEXT NOT NULL, refs TEXT NOT NULL);
CREATE TABLE outputs (model INTEGER NOT NULL REFERENCES models(idx),
    dialogue_id TEXT NOT NULL REFERENCES items(dialogue_id), summary TEXT NOT NULL, rouge_l REAL NOT NULL,
    PRIMARY KEY (model, dialogue_id));
CREATE TABLE raters (name TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('human', 'harness')),
    note TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE TABLE shown (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE,
    rater TEXT NOT NULL REFERENCES raters(name), dialogue_id TEXT NOT NULL REFERENCES items(dialogue_id),
    left_model INTEGER NOT NULL REFERENCES models(idx), right_model INTEGER NOT NULL REFERENCES models(idx),
    pair_low INTEGER NOT NULL, pair_high INTEGER NOT NULL, shown_at REAL NOT NULL,
    UNIQUE (rater, dialogue_id, pair_low, pair_high));
CREATE TABLE votes (shown_id INTEGER PRIMARY KEY REFERENCES shown(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    flags_left TEXT NOT NULL, flags_right TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('human', 'harness')), seconds REAL, voted_at REAL NOT NULL);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection with our settings; callers issue BEGIN/COMMIT themselves (isolation_level=None)."""
    # timeout: how long to wait for another process's write lock before giving up.
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA synchronous = FULL")  # an acknowledged vote survives a power cut too
    except sqlite3.DatabaseError as exc:
        con.close()
        raise DataError(f"{path}: not a usable SQLite database ({exc})") from None
    return con


def check_schema(path: Path) -> None:
    """:class:`DataError` unless ``path`` is a review database with the schema this code reads."""
    con = connect(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a usable SQLite database ({exc})") from None
    finally:
        con.close()
    if meta.get("format") != "dialogtune-review":
        raise DataError(
            f"{path}: not a dialogtune review database (tables: {', '.join(sorted(tables)) or 'none'})"
        )
    version = int(meta.get("schema_version", 0))
    if version != SCHEMA_VERSION:
        raise DataError(
            f"{path}: review database schema {version}; this dialogtune reads schema {SCHEMA_VERSION}"
            + (" (made by a newer dialogtune: upgrade)" if version > SCHEMA_VERSION else "")
        )


def create_tables(con: sqlite3.Connection, review: ReviewSet, sample: int | None, seed: int) -> None:
    """Create the schema and store ``review`` (its ``sample`` of dialogues) inside ``con``'s transaction."""
    from dialogtune import __version__

    for statement in _SCHEMA.split(";"):
        if statement.strip():
            con.execute(statement)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    items = review.sample(sample, seed)
    meta = {
        "format": "dialogtune-review",
        "schema_version": str(SCHEMA_VERSION),
        "review_key": review.key,
        "data_fingerprint": review.data_fingerprint,
        "sample": json.dumps(sample),
        "seed": str(seed),
        "created": str(time.time()),
        "dialogtune_version": __version__,
    }
    con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    con.executemany(
        "INSERT INTO models VALUES (?, ?, ?, ?)",
        [(i, m.name, m.path, m.fingerprint) for i, m in enumerate(review.models)],
    )
    con.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?)",
        [(it.id, pos, it.dialogue, json.dumps(list(it.references))) for pos, it in enumerate(items)],
    )
    con.executemany(
        "INSERT INTO outputs VALUES (?, ?, ?, ?)",
        [
            (i, it.id, m.summaries[it.id], m.rouge_l[it.id])
            for i, m in enumerate(review.models)
            for it in items
        ],
    )
