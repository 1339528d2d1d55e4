"""The review database: binding to its runs, votes only for shown pairs, bad input, many writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from review_runs import records, write_run, write_runs

import dialogtune
from dialogtune.errors import ConfigError, DataError
from dialogtune.review import Refused, ReviewStore, review_set
from dialogtune.review.store import check_rater_name


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_runs(tmp_path_factory.mktemp("review-runs"))


@pytest.fixture
def store(run_dirs: list[Path], tmp_path: Path) -> ReviewStore:
    return ReviewStore.create_or_open(tmp_path / "review.sqlite", review_set(run_dirs), sample=5, seed=3)


def test_database_is_versioned_wal_and_holds_the_review(store: ReviewStore, run_dirs: list[Path]) -> None:
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta["format"] == "dialogtune-review" and meta["schema_version"] == "1"
    assert store.models == ["good", "vague", "inventive"] and len(store.items) == 5
    assert store.per_rater == 5 * 3  # every dialogue with every model pair
    assert con.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == 15
    paths = store.model_paths()
    assert paths["good"][0] == str(run_dirs[0].resolve())


def test_votes_round_trip_with_sides_and_progress(store: ReviewStore) -> None:
    first = store.next_pair("ann")
    assert (first.done, first.total) == (0, 15)
    assert store.next_pair("ann") == first  # pending until voted: a reload shows the same pair
    assert store.vote("ann", first.token, "left", ["absent_person"], []) == 1
    second = store.next_pair("ann")
    assert second.token != first.token and second.done == 1
    store.vote("ann", second.token, "tie")
    assert store.progress("ann") == (2, 15)
    v1, v2 = store.votes()
    summaries = {m: store.rouge_l()[m] for m in store.models}  # every model has a score per dialogue
    assert all(len(s) == 5 for s in summaries.values())
    assert v1.winner == v1.left and v1.flags_left == ("absent_person",) and v1.kind == "human"
    assert v2.winner is None and v2.choice == "tie"
    # The left summary shown is the left model's summary of that dialogue.
    good_text = {r.id: r.references[0] for r in records()}[first.dialogue_id]
    assert (first.left == good_text) == (v1.left == "good")


def test_a_vote_for_a_pair_that_was_not_shown_is_refused(store: ReviewStore) -> None:
    shown = store.next_pair("ann")
    with pytest.raises(Refused) as unknown:
        store.vote("ann", "made-up-token", "left")
    assert unknown.value.status == 404
    with pytest.raises(Refused) as other:
        store.vote("bob", shown.token, "left")
    assert other.value.status == 403
    for choice, flags, status in (("best", [], 400), ("left", ["rude"], 400)):
        with pytest.raises(Refused) as bad:
            store.vote("ann", shown.token, choice, flags)
        assert bad.value.status == status
    store.vote("ann", shown.token, "right")
    with pytest.raises(Refused) as twice:
        store.vote("ann", shown.token, "left")
    assert twice.value.status == 409
    assert [v.choice for v in store.votes()] == ["right"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 41, "<script>", "_ann", "ann\x00", "a/b"])
def test_bad_rater_names_are_refused(name: str) -> None:
    with pytest.raises(Refused) as refused:
        check_rater_name(name)
    assert refused.value.status == 400


def test_good_rater_names() -> None:
    assert check_rater_name("  José   O'Neil-2 ") == "José O'Neil-2"


def test_harness_raters_are_their_own_kind(store: ReviewStore) -> None:
    store.add_rater("harness-x", kind="harness", note="a rule")
    with pytest.raises(Refused) as taken:
        store.add_rater("harness-x", kind="human")
    assert taken.value.status == 409
    shown = store.next_pair("harness-x")
    store.vote("harness-x", shown.token, "left")
    assert store.votes()[0].kind == "harness"
    assert store.raters()["harness-x"] == ("harness", "a rule")


def test_per_rater_limit_and_done(run_dirs: list[Path], tmp_path: Path) -> None:
    store = ReviewStore.create_or_open(tmp_path / "r.sqlite", review_set(run_dirs[:2]), sample=4, per_rater=3)
    for _ in range(3):
        store.vote("ann", store.next_pair("ann").token, "left")
    assert store.next_pair("ann") is None and store.progress("ann") == (3, 3)


def test_reopening_continues_and_a_database_from_another_review_is_refused(
    store: ReviewStore, run_dirs: list[Path]
) -> None:
    store.vote("ann", store.next_pair("ann").token, "left")
    # The same runs in another order are the same review; the stored sample is kept.
    again = ReviewStore.create_or_open(store.path, review_set(run_dirs[::-1]))
    assert again.items == store.items and len(again.votes()) == 1
    with pytest.raises(DataError, match="holds the review of other runs"):
        ReviewStore.create_or_open(store.path, review_set(run_dirs[:2]))
    with pytest.raises(DataError, match="drawn with --sample 5 --seed 3"):
        ReviewStore.create_or_open(store.path, review_set(run_dirs), sample=6)


def test_re_evaluated_run_makes_another_review(run_dirs: list[Path], tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    ReviewStore.create_or_open(db, review_set(run_dirs[:2]))
    changed = write_run(tmp_path / "vague", "inventive")  # same name, other summaries
    with pytest.raises(DataError, match="other runs"):
        ReviewStore.create_or_open(db, review_set([run_dirs[0], changed]))


def test_files_that_are_not_review_databases(
    tmp_path: Path, store: ReviewStore, run_dirs: list[Path]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, " * 100)
    with pytest.raises(DataError, match="not a usable SQLite database"):
        ReviewStore.open(text)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(DataError, match="not a dialogtune review database"):
        ReviewStore.open(other)
    before = other.read_bytes()
    with pytest.raises(DataError, match="not a dialogtune review database"):
        ReviewStore.create_or_open(other, review_set(run_dirs))
    assert other.read_bytes() == before  # someone else's database is left as it was
    with pytest.raises(DataError, match="not found"):
        ReviewStore.open(tmp_path / "missing.sqlite")
    con = sqlite3.connect(store.path)
    with con:
        con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(DataError, match="schema 7.*newer dialogtune"):
        ReviewStore.open(store.path)


def test_bad_run_dirs(run_dirs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run directory not found"):
        review_set([run_dirs[0], tmp_path / "nope"])
    with pytest.raises(ConfigError, match="at least two runs"):
        review_set([run_dirs[0]])
    with pytest.raises(ConfigError, match="given twice"):
        review_set([run_dirs[0], run_dirs[0]])
    fewer = write_run(tmp_path / "fewer", "vague", records(10))
    with pytest.raises(DataError, match="different dialogues: good has 12, fewer has 10"):
        review_set([run_dirs[0], fewer])
    reworded = write_run(tmp_path / "reworded", "vague", records(12, variant=" today"))
    with pytest.raises(DataError, match="different text for dialogue"):
        review_set([run_dirs[0], reworded])


def test_experiment_directories_expand_to_their_runs(run_dirs: list[Path], tmp_path: Path) -> None:
    root = run_dirs[0].parent
    manifest = {"runs": [{"name": "zero-shot", "path": "vague"}, {"name": "lora", "path": "good"}]}
    (root / "experiment.json").write_text(json.dumps(manifest))
    try:
        assert [m.name for m in review_set([root]).models] == ["zero-shot", "lora"]
    finally:
        (root / "experiment.json").unlink()


_VOTER = textwrap.dedent(
    """
    import sys, time
    from dialogtune.review import ReviewStore
    store = ReviewStore.open(sys.argv[1])
    rater, n = sys.argv[2], int(sys.argv[3])
    while time.time() < float(sys.argv[4]):  # start together
        time.sleep(0.001)
    print("start", time.time(), flush=True)
    for i in range(n):
        shown = store.next_pair(rater)
        store.vote(rater, shown.token, ("left", "right", "tie")[i % 3], ["wrong_fact"] if i % 2 else [])
        print(shown.token, flush=True)
    print("end", time.time(), flush=True)
    """
)


def _voter(db: Path, rater: str, n: int, start: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(dialogtune.__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", _VOTER, str(db), rater, str(n), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_voting_at_once_lose_nothing(store: ReviewStore) -> None:
    start = time.time() + 2.0
    procs = {rater: _voter(store.path, rater, 15, start) for rater in ("ann", "bob")}
    acknowledged, began, ended = {}, [], []
    for rater, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines = out.split("\n")
        began.append(float(lines[0].split()[1]))
        ended.append(float(lines[-2].split()[1]))
        acknowledged[rater] = lines[1:-2]
    # Both were writing at the same time: each started before the other finished.
    assert max(began) < min(ended)
    votes = store.votes()
    assert len(votes) == 30
    for rater in ("ann", "bob"):
        mine = [v for v in votes if v.rater == rater]
        assert len(mine) == 15 == len(acknowledged[rater])
        assert len({(v.dialogue_id, frozenset((v.left, v.right))) for v in mine}) == 15  # no repeats


def test_a_killed_voter_loses_no_acknowledged_vote(store: ReviewStore) -> None:
    proc = _voter(store.path, "cy", 15, 0)
    acknowledged = [proc.stdout.readline().strip() for _ in range(6)][1:]  # after "start"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    con = sqlite3.connect(store.path)
    tokens = {t for (t,) in con.execute("SELECT s.token FROM votes v JOIN shown s ON s.id = v.shown_id")}
    assert set(acknowledged) <= tokens
    assert ReviewStore.open(store.path).progress("cy")[0] >= 5
