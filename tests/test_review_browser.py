"""The review page in a real browser (headless Chromium), and the harness rater end to end.

Chromium is the Debian package (``make install`` installs it where apt is available); the tests
drive it with playwright's Python package through ``executable_path`` (no browser download).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from review_runs import write_runs

from dialogtune.report import ReportOptions, load_runs, write_report
from dialogtune.review import ReviewStore, review_set
from dialogtune.review.app import create_app
from dialogtune.review.harness import RULE, find_chromium, run_harness

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_runs(tmp_path_factory.mktemp("review-browser-runs"))


@contextmanager
def serving(store: ReviewStore) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the review server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_vote_by_click_and_keyboard_then_reload(run_dirs: list[Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = ReviewStore.create_or_open(tmp_path / "review.sqlite", review_set(run_dirs), sample=4)
    with serving(store) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#name", "Ann")
        page.click("button[type=submit]")
        page.wait_for_url("**/rate?rater=Ann")
        assert page.inner_text("#progress") == "pair 1 of 12"
        assert not any(name in page.content() for name in store.models)  # blind
        assert page.is_disabled("#next")  # nothing chosen yet
        page.keyboard.press("n")  # so "n" does nothing
        first = page.input_value("input[name=pair]")

        # By click: flag A, choose B, press Next.
        page.check("#summary-left input[value=absent_person]")
        page.click("input[name=choice][value=right]")
        assert page.is_enabled("#next")
        page.click("#next")
        page.wait_for_function("() => document.querySelector('#progress').textContent === 'pair 2 of 12'")
        second = page.input_value("input[name=pair]")
        assert second != first

        # By keyboard: 3 (tie), then n.
        page.keyboard.press("3")
        assert page.is_checked("input[name=choice][value=tie]")
        page.keyboard.press("n")
        page.wait_for_function("() => document.querySelector('#progress').textContent === 'pair 3 of 12'")
        third = page.input_value("input[name=pair]")

        # A reload shows the same pending pair; the two votes are in the database.
        page.reload()
        assert page.inner_text("#progress") == "pair 3 of 12"
        assert page.input_value("input[name=pair]") == third
        one, two = store.votes()
        assert (one.rater, one.choice, one.flags_left, one.flags_right) == (
            "Ann",
            "right",
            ("absent_person",),
            (),
        )
        assert (two.choice, two.flags_left, two.flags_right) == ("tie", (), ())

        # On a phone the two summaries stack and nothing scrolls sideways.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(url + "/rate?rater=Ann")
        left, right = (phone.locator(f"#summary-{side}").bounding_box() for side in ("left", "right"))
        assert left["x"] == right["x"] and right["y"] > left["y"] + left["height"] - 1
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        wide_left, wide_right = (
            page.locator(f"#summary-{side}").bounding_box() for side in ("left", "right")
        )
        assert wide_right["x"] > wide_left["x"] + wide_left["width"] - 1  # side by side on a desktop
        browser.close()


def test_harness_rater_end_to_end(run_dirs: list[Path], tmp_path: Path) -> None:
    db = tmp_path / "harness.sqlite"
    result = run_harness(run_dirs, db, sample=3, seed=1)
    assert (result.votes, result.by_keyboard, result.by_click, result.finished) == (9, 5, 4, True)
    store = ReviewStore.open(db)
    votes = store.votes()
    assert len(votes) == 9 and {v.kind for v in votes} == {"harness"}
    assert store.raters() == {"harness-rougeL": ("harness", RULE)}
    # The rule: the reference-copying model always wins; the one inventing people is always flagged.
    assert all(v.winner == "good" for v in votes if "good" in (v.left, v.right))
    assert all("absent_person" in v.flags_of("inventive") for v in votes if "inventive" in (v.left, v.right))
    assert not any(v.flags_of("good") for v in votes if "good" in (v.left, v.right))
    md = write_report(load_runs(run_dirs), tmp_path / "report", ReportOptions(review=db, n_resamples=100))
    text = md["markdown"].read_text()
    assert "HARNESS VOTES, NOT HUMAN JUDGEMENT: 9 votes" in text and "Human votes" not in text
