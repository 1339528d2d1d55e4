"""The review page over HTTP (in-process), the CLI verb, its CSV export and the report section."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_runs import records, write_run, write_runs

from dialogtune.cli import main
from dialogtune.report import ReportOptions, load_runs, write_report
from dialogtune.review import ReviewStore, review_set
from dialogtune.review.app import TOKEN_COOKIE, create_app

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_runs(tmp_path_factory.mktemp("review-app-runs"))


@pytest.fixture
def store(run_dirs: list[Path], tmp_path: Path) -> ReviewStore:
    return ReviewStore.create_or_open(tmp_path / "review.sqlite", review_set(run_dirs), sample=4, seed=0)


def _pair_token(html: str) -> str:
    return re.search(r'name="pair" value="([^"]+)"', html).group(1)


def test_rate_vote_and_reload_over_http(store: ReviewStore) -> None:
    client = TestClient(create_app(store))
    start = client.get("/")
    assert start.status_code == 200 and 'name="name"' in start.text and 'name="token"' not in start.text
    begin = client.post("/start", data={"name": "  Ann  "}, follow_redirects=False)
    assert begin.status_code == 303 and begin.headers["location"] == "/rate?rater=Ann"
    page = client.get("/rate?rater=Ann")
    assert page.status_code == 200 and "pair 1 of 12" in page.text
    assert page.headers["cache-control"] == "no-store"
    for name in store.models:  # blind: no model name anywhere on the page
        assert name not in page.text
    token = _pair_token(page.text)
    assert _pair_token(client.get("/rate?rater=Ann").text) == token  # reload: same pair
    form = {"rater": "Ann", "pair": token, "choice": "right", "flag_left": ["misses_point", "wrong_fact"]}
    voted = client.post("/vote", data=form, follow_redirects=False)
    assert voted.status_code == 303 and voted.headers["location"] == "/rate?rater=Ann"
    after = client.get("/rate?rater=Ann")
    assert "pair 2 of 12" in after.text and _pair_token(after.text) != token
    (vote,) = store.votes()
    assert (vote.rater, vote.choice, vote.flags_left, vote.flags_right) == (
        "Ann", "right", ("misses_point", "wrong_fact"), ()
    )  # fmt: skip
    assert client.get("/health").json() == {"status": "ok", "models": 3, "dialogues": 4, "per_rater": 12}


def test_bad_votes_and_names_get_4xx(store: ReviewStore) -> None:
    client = TestClient(create_app(store))
    token = _pair_token(client.get("/rate?rater=ann").text)
    cases = [
        ({"rater": "ann", "pair": "never-shown", "choice": "left"}, 404),
        ({"rater": "bob", "pair": token, "choice": "left"}, 403),
        ({"rater": "ann", "pair": token, "choice": "both"}, 400),
        ({"rater": "ann", "pair": token, "choice": "left", "flag_right": "rude"}, 400),
        ({"rater": "<b>", "pair": token, "choice": "left"}, 400),
    ]
    for form, status in cases:
        response = client.post("/vote", data=form)
        assert response.status_code == status, form
        assert "<b>" not in response.text  # error pages escape what they echo
    assert client.post("/vote", data={"rater": "ann", "pair": token, "choice": "tie"}).status_code == 200
    assert client.post("/vote", data={"rater": "ann", "pair": token, "choice": "tie"}).status_code == 409
    assert client.get("/rate?rater=").status_code == 400
    assert client.post("/start", data={"name": "x" * 50}).status_code == 400
    assert client.post("/vote", content=b"rater=ann&pair=" + b"x" * 20_000).status_code == 413
    store.add_rater("robot", kind="harness")
    assert client.post("/start", data={"name": "robot"}).status_code == 409
    assert [v.choice for v in store.votes()] == ["tie"]


def test_shared_token(store: ReviewStore) -> None:
    client = TestClient(create_app(store, token=TOKEN))
    assert 'name="token"' in client.get("/").text
    assert client.get("/rate?rater=ann").status_code == 401
    assert client.post("/vote", data={"rater": "ann", "pair": "x", "choice": "left"}).status_code == 401
    assert client.post("/start", data={"name": "ann", "token": "wrong"}).status_code == 401
    assert client.get("/rate?rater=ann", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    begin = client.post("/start", data={"name": "ann", "token": TOKEN}, follow_redirects=False)
    assert begin.status_code == 303
    cookie = begin.headers["set-cookie"]
    assert f"{TOKEN_COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/rate?rater=ann").status_code == 200  # the cookie from /start


def test_done_page(run_dirs: list[Path], tmp_path: Path) -> None:
    store = ReviewStore.create_or_open(tmp_path / "r.sqlite", review_set(run_dirs[:2]), sample=2)
    client = TestClient(create_app(store))
    for _ in range(2):
        client.post("/vote", data={"rater": "ann", "pair": _pair_token(client.get("/rate?rater=ann").text),
                                   "choice": "left"})  # fmt: skip
    done = client.get("/rate?rater=ann")
    assert 'id="done"' in done.text and "2 of the 2 pairs" in done.text


def test_summaries_are_escaped(tmp_path: Path) -> None:
    recs = records(3)
    runs = [write_run(tmp_path / "good", "good", recs), write_run(tmp_path / "evil", "vague", recs)]
    rows = (runs[1] / "predictions" / "validation.jsonl").read_text()
    (runs[1] / "predictions" / "validation.jsonl").write_text(
        rows.replace("Two people have a conversation.", "<script>alert(1)</script>")
    )
    store = ReviewStore.create_or_open(tmp_path / "r.sqlite", review_set(runs))
    page = TestClient(create_app(store)).get("/rate?rater=ann").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _summaries(store: ReviewStore) -> dict[tuple[str, str], str]:
    """``{(model, dialogue id): summary}`` as the database holds them."""
    con = sqlite3.connect(store.path)
    try:
        query = "SELECT m.name, o.dialogue_id, o.summary FROM outputs o JOIN models m ON m.idx = o.model"
        return {(model, dialogue): text for model, dialogue, text in con.execute(query)}
    finally:
        con.close()


def _vote_all(store: ReviewStore, rater: str, prefer: str, kind: str = "human") -> None:
    """Vote every planned pair: ``prefer`` wins where it is shown, ties otherwise."""
    store.add_rater(rater, kind=kind, note="prefers " + prefer if kind == "harness" else "")
    texts = _summaries(store)
    while (shown := store.next_pair(rater)) is not None:
        best = texts[(prefer, shown.dialogue_id)]
        choice = "left" if best == shown.left else "right" if best == shown.right else "tie"
        store.vote(rater, shown.token, choice, ["absent_person"] if "Zorblax" in shown.left else [])


def test_cli_export_and_report_section(
    store: ReviewStore, run_dirs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _vote_all(store, "ann", "good")
    _vote_all(store, "bob", "good")
    _vote_all(store, "harness-rouge", "good", kind="harness")
    out = tmp_path / "votes.csv"
    assert main(["review", "export", "--db", str(store.path), "--output", str(out)]) == 0
    assert "36 votes" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 36 and {r["rater_kind"] for r in rows} == {"human", "harness"}
    assert all(
        r["winner"] in ("good", "tie") or "good" not in (r["left_model"], r["right_model"]) for r in rows
    )
    assert main(["review", "export", "--db", str(store.path), "--output", str(out)]) == 2  # no overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["review", "export", "--db", str(store.path), "--output", str(out), "--overwrite"]) == 0

    report = tmp_path / "report"
    assert main(["report", *map(str, run_dirs), "--output", str(report), "--review", str(store.path),
                 "--n-resamples", "200"]) == 0  # fmt: skip
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    section = md[md.index("## Blind review") :]
    assert "Human votes: 24 votes by 2 rater(s)" in section
    assert "HARNESS VOTES, NOT HUMAN JUDGEMENT: 12 votes" in section and "prefers good" in section
    assert re.search(r"\| 1 \| good \| ", section)  # ranked first by both kinds
    assert "| good | vague | 8 | 8 | 0 | 0 | 100.0% " in section
    assert "ann / bob | 12 | +1.00" in section  # they agree on every comparison
    assert 'id="review"' in html and "Harness votes (not human judgement): Bradley-Terry ranking" in html
    numbers = json.loads((report / "report.json").read_text())["review"]
    assert numbers["by_kind"]["human"]["ranking"][0]["model"] == "good"
    assert numbers["by_kind"]["harness"]["votes"] == 12


def test_report_section_warns_about_runs_not_in_the_report(
    store: ReviewStore, run_dirs: list[Path], tmp_path
):
    paths = write_report(
        load_runs(run_dirs[:2]), tmp_path / "r", ReportOptions(review=store.path, n_resamples=50)
    )
    md = paths["markdown"].read_text()
    assert "not in this report: inventive" in md and "No votes yet." in md


def test_cli_usage_and_bad_input(
    run_dirs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["review", "--help"])
    help_text = capsys.readouterr().out
    assert "dialogtune review RUN_DIR [RUN_DIR ...] --db DB" in help_text
    assert "dialogtune review export --db DB --output CSV" in help_text
    db = str(tmp_path / "r.sqlite")
    for argv, message in (
        (["review", str(run_dirs[0]), str(tmp_path / "missing"), "--db", db], "run directory not found"),
        (["review", "export", str(run_dirs[0]), "--db", db, "--output", "x.csv"], "takes no run directories"),
        (["review", "export", "--db", db], "needs --output"),
        (["review", "export", "--db", db, "--output", str(tmp_path / "v.csv")], "review database not found"),
        (["review", *map(str, run_dirs), "--db", db, "--output", "x.csv"], "--output belongs to"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("dialogtune: error: ") and message in err and err.count("\n") == 1
