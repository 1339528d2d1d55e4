"""The review harness: an automatic rater that clicks through the review page in headless Chromium.

It is NOT human judgement, and everything it writes says so: its rater is registered with kind
``harness`` (the ``raters`` table, each vote's ``source``, the export's ``rater_kind`` column) and
the report shows its votes apart, under a warning. It exists to exercise the whole path a person
takes (page, keyboard and mouse, database, report) on real runs, repeatably.

Its rule (:data:`RULE`), applied only to what the page shows plus the dialogue's references:
the summary with the higher ROUGE-L F against the references wins, a tie when the two differ by
less than :data:`TIE_MARGIN`; a summary is flagged "names someone not in the dialogue" when the
report's faithfulness heuristic (``report.faithfulness.find_hallucinations``) finds an invented
speaker or name. It never sets the other flags. Votes alternate between the keyboard (1 / 2 / 3,
then n) and mouse clicks.

    python -m dialogtune.review.harness RUN_DIR [RUN_DIR ...] --db review.sqlite \\
        [--sample 20 --seed 0] [--votes N] [--report DIR]

It starts the real ``dialogtune review`` on a free local port, votes until the rater is done (or
``--votes``), stops the server and optionally writes the report. Needs Chromium (Debian package
``chromium``) and the ``playwright`` Python package (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dialogtune
from dialogtune.errors import DialogtuneError
from dialogtune.review.runs import Item, review_set
from dialogtune.review.store import ReviewStore

TIE_MARGIN = 0.02
RULE = (
    f"higher ROUGE-L F against the reference wins, tie within {TIE_MARGIN}; flags 'names someone not in "
    "the dialogue' by dialogtune's faithfulness heuristic; never the other flags"
)
DEFAULT_RATER = "harness-rougeL"
_KEYS = {"left": "1", "right": "2", "tie": "3"}


@dataclass(frozen=True)
class HarnessResult:
    rater: str
    votes: int
    by_keyboard: int
    by_click: int
    finished: bool  # the page said the rater is done


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def judge(
    left: str, right: str, item: Item, vocabulary: Set[str] = frozenset()
) -> tuple[str, list[str], list[str]]:
    """``(choice, flags for A, flags for B)`` by :data:`RULE`.

    ``vocabulary``: words seen in lowercase in the review's dialogues and references, so a
    capitalised ordinary word at the start of a sentence ("Two people ...") is not taken for a name.
    """
    from dialogtune.evaluation.rouge import RougeSettings, score_examples
    from dialogtune.report.faithfulness import find_hallucinations, lowercase_vocabulary

    scores = score_examples([left, right], [item.references] * 2, RougeSettings(rouge_types=("rougeL",)))
    a, b = (s.mean["rougeL"] for s in scores)
    choice = "tie" if abs(a - b) < TIE_MARGIN else "left" if a > b else "right"

    def flags(text: str) -> list[str]:
        known = vocabulary | lowercase_vocabulary([left, right])
        return ["absent_person"] if find_hallucinations(text, item.dialogue, known).flagged else []

    return choice, flags(left), flags(right)


def drive(
    base_url: str,
    rater: str,
    items: dict[str, Item],
    max_votes: int | None = None,
    chromium: str | None = None,
) -> HarnessResult:
    """Vote as ``rater`` on the page at ``base_url`` until done or ``max_votes``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise DialogtuneError("the review harness needs playwright: pip install 'dialogtune[test]'") from None
    browser_path = chromium or find_chromium()
    if browser_path is None:
        raise DialogtuneError("the review harness needs Chromium: apt-get install chromium")
    from dialogtune.report.faithfulness import lowercase_vocabulary

    vocabulary = lowercase_vocabulary(t for item in items.values() for t in (item.dialogue, *item.references))
    votes = by_keyboard = 0
    finished = False
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/rate?rater={quote(rater, safe='')}")
            while max_votes is None or votes < max_votes:
                if page.locator("#done").count():
                    finished = True
                    break
                item = items[page.locator("#pair").get_attribute("data-dialogue-id") or ""]
                left = page.locator("#summary-left .text").inner_text()
                right = page.locator("#summary-right .text").inner_text()
                choice, flags_left, flags_right = judge(left, right, item, vocabulary)
                for side, flags in (("left", flags_left), ("right", flags_right)):
                    for flag in flags:
                        page.check(f"#summary-{side} input[value={flag}]")
                token = page.locator("input[name=pair]").input_value()
                if votes % 2 == 0:  # the keyboard shortcuts
                    page.keyboard.press(_KEYS[choice])
                    page.keyboard.press("n")
                    by_keyboard += 1
                else:  # the mouse
                    page.click(f"input[name=choice][value={choice}]")
                    page.click("#next")
                page.wait_for_function(
                    "t => { const p = document.querySelector('input[name=pair]');"
                    " return document.readyState === 'complete' && (!p || p.value !== t); }",
                    arg=token,
                )
                votes += 1
            else:
                finished = bool(page.locator("#done").count())
        finally:
            browser.close()
    return HarnessResult(rater, votes, by_keyboard, votes - by_keyboard, finished)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines()
            raise DialogtuneError(f"dialogtune review exited: {lines[-1] if lines else server.returncode}")
        try:
            with opener.open(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise DialogtuneError(f"dialogtune review did not answer on {url} within {timeout:.0f} s")


def run_harness(
    run_dirs: Sequence[str | Path],
    db: str | Path,
    *,
    sample: int | None = None,
    seed: int | None = None,
    max_votes: int | None = None,
    rater: str = DEFAULT_RATER,
    chromium: str | None = None,
) -> HarnessResult:
    """Start ``dialogtune review`` on ``run_dirs``, vote through the page as a harness rater, stop it."""
    items = {item.id: item for item in review_set(run_dirs).items}
    port = _free_port()
    command = [sys.executable, "-m", "dialogtune", "review", *map(str, run_dirs), "--db", str(db)]
    command += ["--port", str(port), "--log-level", "warning"]
    command += ["--sample", str(sample)] if sample is not None else []
    command += ["--seed", str(seed)] if seed is not None else []
    # The server runs this very dialogtune, wherever it was imported from; and without a token.
    paths = [str(Path(dialogtune.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    env.pop("DIALOGTUNE_API_TOKEN", None)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, server, log)
            ReviewStore.open(db).add_rater(rater, kind="harness", note=RULE)
            return drive(url, rater, items, max_votes, chromium)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dialogtune.review.harness",
        description="An automatic rater (NOT human judgement) that votes through the review page in headless "
        f"Chromium. Rule: {RULE}.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--db", required=True, help="the review database (created if new)")
    parser.add_argument("--sample", type=int, help="as for dialogtune review")
    parser.add_argument("--seed", type=int, help="as for dialogtune review")
    parser.add_argument("--votes", type=int, help="stop after this many votes (default: until done)")
    parser.add_argument(
        "--rater", default=DEFAULT_RATER, help="the harness rater's name (default: %(default)s)"
    )
    parser.add_argument("--chromium", help="path of the Chromium binary (default: found on PATH)")
    parser.add_argument("--report", metavar="DIR", help="then write `dialogtune report --review` into DIR")
    args = parser.parse_args(argv)
    try:
        result = run_harness(
            args.run_dirs,
            args.db,
            sample=args.sample,
            seed=args.seed,
            max_votes=args.votes,
            rater=args.rater,
            chromium=args.chromium,
        )
        print(
            f"harness rater '{result.rater}' cast {result.votes} votes ({result.by_keyboard} by keyboard, "
            f"{result.by_click} by click){', all it was planned' if result.finished else ''}; "
            f"they are marked rater_kind=harness in {args.db}"
        )
        if args.report:
            from dialogtune.report import ReportOptions, load_runs, write_report

            paths = write_report(load_runs(args.run_dirs), args.report, ReportOptions(review=args.db))
            print(f"report: {paths['markdown']}")
    except DialogtuneError as exc:
        print(f"dialogtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
