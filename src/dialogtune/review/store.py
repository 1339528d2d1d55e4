"""Votes in SQLite: one database per review, one transaction per vote, safe for many processes.

The database holds everything a review needs (the dialogues, every model's summaries, the raters,
which pair each rater was shown, and the votes), so export and the report read it alone.
Properties the page and the report rely on:

- **WAL mode, synchronous=FULL, one IMMEDIATE transaction per draw and per vote**: a second
  server process or a crash loses nothing that was acknowledged, and two raters asking for a
  pair at once see each other's draws (the scheduler's counts are read under the write lock).
- **Bound to its runs**: ``meta.review_key`` is the fingerprint of the dialogues and of every
  model's summaries (:class:`~dialogtune.review.runs.ReviewSet`); a database made for other
  runs is refused rather than mixed.
- **Votes only for pairs that were shown**: a vote names the random token of a ``shown`` row; an
  unknown token (404), another rater's pair (403) or a second vote for the same pair (409) is
  refused, so a vote always says which two models the rater really saw, on which side.
- **Versioned schema** (``meta.schema_version`` and ``PRAGMA user_version``): a database from a
  newer dialogtune is refused with one line, never half-read.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dialogtune.errors import DataError, DialogtuneError
from dialogtune.review.database import check_schema, connect, create_tables
from dialogtune.review.runs import ReviewSet
from dialogtune.review.schedule import choose_next, model_pairs, sides

FLAGS: dict[str, str] = {
    "absent_person": "names someone not in the dialogue",
    "misses_point": "misses the main point",
    "wrong_fact": "wrong fact",
}
CHOICES = ("left", "right", "tie")
RATER_KINDS = ("human", "harness")
# A letter or digit first, then letters, digits, spaces and . ' - (no accounts: a name is enough).
_RATER_RE = re.compile(r"[^\W_][\w .'-]{0,39}")


class Refused(DialogtuneError):
    """A request the review cannot accept; ``status`` is the HTTP status the page answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Shown:
    """A pair as the page shows it: no model names, only the two summaries."""

    token: str
    rater: str
    dialogue_id: str
    dialogue: str
    left: str
    right: str
    done: int  # votes the rater has cast
    total: int  # comparisons planned for the rater


@dataclass(frozen=True)
class Vote:
    """One recorded vote with everything needed to analyse it (model names included)."""

    id: int
    rater: str
    kind: str  # "human" or "harness"
    dialogue_id: str
    left: str
    right: str
    choice: str  # "left", "right" or "tie"
    flags_left: tuple[str, ...]
    flags_right: tuple[str, ...]
    seconds: float | None
    voted_at: float

    @property
    def winner(self) -> str | None:
        return {"left": self.left, "right": self.right}.get(self.choice)

    def flags_of(self, model: str) -> tuple[str, ...]:
        return self.flags_left if model == self.left else self.flags_right


def check_rater_name(name: str) -> str:
    """The rater name, stripped; :class:`Refused` (400) when it is not a usable name."""
    cleaned = " ".join(str(name).split())
    if not _RATER_RE.fullmatch(cleaned):
        raise Refused(
            400,
            "a rater name is 1-40 letters, digits, spaces or . ' - and starts with a letter or digit",
        )
    return cleaned


class ReviewStore:
    """One review database. Build with :meth:`create_or_open` (the server) or :meth:`open` (readers)."""

    def __init__(self, path: Path, per_rater: int | None = None) -> None:
        self.path = path
        meta = self._meta()
        self.seed = int(meta["seed"])
        self.key = meta["review_key"]
        with self._read() as con:
            self.items = [r[0] for r in con.execute("SELECT dialogue_id FROM items ORDER BY position")]
            self.models = [r[0] for r in con.execute("SELECT name FROM models ORDER BY idx")]
        self.pairs = model_pairs(len(self.models))
        pool = len(self.items) * len(self.pairs)
        self.per_rater = pool if per_rater is None else min(per_rater, pool)

    # ---- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> ReviewStore:
        """An existing review database (for export and the report)."""
        db = Path(path)
        if not db.is_file():
            raise DataError(f"review database not found: {db}")
        check_schema(db)
        return cls(db)

    @classmethod
    def create_or_open(
        cls,
        path: str | Path,
        review: ReviewSet,
        sample: int | None = None,
        seed: int | None = None,
        per_rater: int | None = None,
    ) -> ReviewStore:
        """The database of ``review`` at ``path``: created when new, checked when it exists.

        An existing database must belong to the same runs (same ``review.key``) and, when
        ``sample``/``seed`` are given, to the same dialogue sample.
        """
        db = Path(path)
        db.parent.mkdir(parents=True, exist_ok=True)
        con = connect(db)
        try:
            con.execute("BEGIN IMMEDIATE")  # two servers starting at once: one creates, one checks
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                create_tables(con, review, sample, 0 if seed is None else seed)
            con.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{db}: not a usable SQLite database ({exc})") from None
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
            con.close()
        check_schema(db)  # before changing anything in a file that may be someone else's
        con = connect(db)
        try:
            con.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
        finally:
            con.close()
        store = cls(db, per_rater)
        meta = store._meta()
        if meta["review_key"] != review.key:
            raise DataError(
                f"{db} holds the review of other runs ({', '.join(store.models)}; review "
                f"{meta['review_key']}, these runs make {review.key}): use another --db for a new review"
            )
        stored_sample = json.loads(meta["sample"])
        if (sample is not None and sample != stored_sample) or (seed is not None and seed != store.seed):
            raise DataError(
                f"{db} reviews {len(store.items)} dialogues drawn with --sample {stored_sample or 'all'} "
                f"--seed {store.seed}: drop --sample/--seed to continue it, or use another --db"
            )
        return store

    # ---- raters ------------------------------------------------------------------------------

    def add_rater(self, name: str, kind: str = "human", note: str = "") -> str:
        """Register ``name`` (idempotent); a name already used by the other kind is refused (409)."""
        if kind not in RATER_KINDS:
            raise ValueError(f"rater kind must be one of {RATER_KINDS}, got {kind!r}")
        with self._write() as con:
            return _ensure_rater(con, check_rater_name(name), kind, note)

    # ---- the rating loop ---------------------------------------------------------------------

    def next_pair(self, rater: str) -> Shown | None:
        """The rater's pending pair, or a newly drawn one; None when the rater has finished."""
        with self._write() as con:
            rater = _ensure_rater(con, check_rater_name(rater), None, "")
            row = con.execute(
                "SELECT s.id FROM shown s LEFT JOIN votes v ON v.shown_id = s.id "
                "WHERE s.rater = ? AND v.shown_id IS NULL ORDER BY s.id LIMIT 1",
                (rater,),
            ).fetchone()
            if row is None:
                row = self._draw(con, rater)
            return None if row is None else self._shown(con, row[0])

    def _draw(self, con: sqlite3.Connection, rater: str) -> tuple[int] | None:
        mine = {
            (d, (lo, hi))
            for d, lo, hi in con.execute(
                "SELECT dialogue_id, pair_low, pair_high FROM shown WHERE rater = ?", (rater,)
            )
        }
        if len(mine) >= self.per_rater:
            return None
        counts = {
            (d, (lo, hi)): n
            for d, lo, hi, n in con.execute(
                "SELECT dialogue_id, pair_low, pair_high, COUNT(*) FROM shown GROUP BY 1, 2, 3"
            )
        }
        chosen = choose_next(self.items, self.pairs, mine, counts)
        if chosen is None:
            return None
        dialogue_id, pair = chosen
        left, right = sides(self.seed, rater, dialogue_id, pair)
        cursor = con.execute(
            "INSERT INTO shown (token, rater, dialogue_id, left_model, right_model, pair_low, pair_high, "
            "shown_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (secrets.token_urlsafe(16), rater, dialogue_id, left, right, pair[0], pair[1], time.time()),
        )
        return (int(cursor.lastrowid or 0),)

    def _shown(self, con: sqlite3.Connection, shown_id: int) -> Shown:
        token, rater, dialogue_id, dialogue, left, right = con.execute(
            "SELECT s.token, s.rater, s.dialogue_id, i.dialogue, l.summary, r.summary FROM shown s "
            "JOIN items i ON i.dialogue_id = s.dialogue_id "
            "JOIN outputs l ON l.model = s.left_model AND l.dialogue_id = s.dialogue_id "
            "JOIN outputs r ON r.model = s.right_model AND r.dialogue_id = s.dialogue_id WHERE s.id = ?",
            (shown_id,),
        ).fetchone()
        return Shown(token, rater, dialogue_id, dialogue, left, right, _done(con, rater), self.per_rater)

    def vote(
        self,
        rater: str,
        token: str,
        choice: str,
        flags_left: Sequence[str] = (),
        flags_right: Sequence[str] = (),
    ) -> int:
        """Record a vote for the pair shown under ``token``; returns the rater's vote count."""
        rater = check_rater_name(rater)
        if choice not in CHOICES:
            raise Refused(400, f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        for flag in (*flags_left, *flags_right):
            if flag not in FLAGS:
                raise Refused(400, f"unknown flag {flag!r} (known: {', '.join(FLAGS)})")
        with self._write() as con:
            row = con.execute(
                "SELECT s.id, s.rater, s.shown_at, r.kind, v.shown_id FROM shown s "
                "JOIN raters r ON r.name = s.rater LEFT JOIN votes v ON v.shown_id = s.id WHERE s.token = ?",
                (str(token),),
            ).fetchone()
            if row is None:
                raise Refused(404, "no such pair was shown (unknown pair token): reload the page")
            shown_id, shown_to, shown_at, kind, voted = row
            if shown_to != rater:
                raise Refused(403, "this pair was shown to another rater")
            if voted is not None:
                raise Refused(409, "this pair already has your vote")
            now = time.time()
            con.execute(
                "INSERT INTO votes (shown_id, choice, flags_left, flags_right, source, seconds, voted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (shown_id, choice, _flags(flags_left), _flags(flags_right), kind, now - shown_at, now),
            )
            return _done(con, rater)

    def progress(self, rater: str) -> tuple[int, int]:
        """``(votes cast, comparisons planned)`` for ``rater``."""
        with self._read() as con:
            return _done(con, check_rater_name(rater)), self.per_rater

    # ---- reading -----------------------------------------------------------------------------

    def votes(self) -> list[Vote]:
        """Every vote, oldest first, with model names."""
        with self._read() as con:
            rows = con.execute(
                "SELECT s.id, s.rater, v.source, s.dialogue_id, l.name, r.name, v.choice, v.flags_left, "
                "v.flags_right, v.seconds, v.voted_at FROM votes v JOIN shown s ON s.id = v.shown_id "
                "JOIN models l ON l.idx = s.left_model JOIN models r ON r.idx = s.right_model "
                "ORDER BY v.voted_at, s.id"
            ).fetchall()
        return [
            Vote(i, rater, kind, d, left, right, choice, _unflags(fl), _unflags(fr), seconds, at)
            for i, rater, kind, d, left, right, choice, fl, fr, seconds, at in rows
        ]

    def raters(self) -> dict[str, tuple[str, str]]:
        """``{name: (kind, note)}``."""
        with self._read() as con:
            return {n: (k, note) for n, k, note in con.execute("SELECT name, kind, note FROM raters")}

    def rouge_l(self) -> dict[str, dict[str, float]]:
        """``{model: {dialogue id: ROUGE-L F}}`` of the reviewed summaries against the references."""
        out: dict[str, dict[str, float]] = {m: {} for m in self.models}
        with self._read() as con:
            for name, dialogue_id, value in con.execute(
                "SELECT m.name, o.dialogue_id, o.rouge_l FROM outputs o JOIN models m ON m.idx = o.model"
            ):
                out[name][dialogue_id] = value
        return out

    def model_paths(self) -> dict[str, tuple[str, str]]:
        """``{model: (run directory, fingerprint)}``."""
        with self._read() as con:
            return {n: (p, f) for n, p, f in con.execute("SELECT name, path, fingerprint FROM models")}

    def _meta(self) -> dict[str, str]:
        with self._read() as con:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = connect(self.path)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from the start (no read-then-upgrade deadlocks)."""
        con = connect(self.path)
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
            con.close()


def _ensure_rater(con: sqlite3.Connection, name: str, kind: str | None, note: str) -> str:
    """Create ``name`` as ``kind`` (human when None) or check an existing rater's kind."""
    row = con.execute("SELECT kind FROM raters WHERE name = ?", (name,)).fetchone()
    if row is None:
        con.execute("INSERT INTO raters VALUES (?, ?, ?, ?)", (name, kind or "human", note, time.time()))
    elif kind is not None and row[0] != kind:
        raise Refused(409, f"the rater name '{name}' is taken by a {row[0]} rater: choose another name")
    elif note:
        con.execute("UPDATE raters SET note = ? WHERE name = ?", (note, name))
    return name


def _done(con: sqlite3.Connection, rater: str) -> int:
    return int(
        con.execute(
            "SELECT COUNT(*) FROM votes v JOIN shown s ON s.id = v.shown_id WHERE s.rater = ?", (rater,)
        ).fetchone()[0]
    )


def _flags(flags: Sequence[str]) -> str:
    return json.dumps(sorted(set(flags)))


def _unflags(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))
