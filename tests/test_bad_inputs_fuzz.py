"""Slow tier: every key of the files ``report`` and ``train``/``run`` read, replaced by a wrong value.

Where :mod:`test_bad_inputs` lists bad inputs by hand, this walks real files (an evaluation run
directory made by ``evaluate``, the shipped training config and experiment) and replaces each
value, at every depth, by values of the wrong kind. Each mutation must either work (exit 0) or
end with exactly one ``dialogtune: error:`` line and exit code 2: never a traceback. The number
of mutations tried is printed (``pytest -m slow -s tests/test_bad_inputs_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dialogtune.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
WRONG: list[Any] = ["x", [], {}, None, True, -1, 1e308, math.nan]


def key_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a parsed document (lists: their first two items)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from key_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:2]):
            yield from key_paths(child, (*prefix, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(document)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


def outcome(argv: list[str]) -> str | None:
    """None when the command worked or failed with one error line; else what went wrong."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except Exception as exc:  # noqa: BLE001 - the point: any exception escaping main() is a finding
        return f"{type(exc).__name__}: {exc}"[:300]
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "it/s]" not in line]
    if code == 0 or (code == 2 and len(lines) == 1 and lines[0].startswith("dialogtune: error: ")):
        return None
    return f"exit {code}: {lines[-3:]}"


def test_report_survives_every_wrong_value_in_a_run_directory(tmp_path: Path) -> None:
    data = tmp_path / "v.jsonl"
    rows = [{"id": str(i), "dialogue": f"#Person1#: hello {i}", "summary": f"greeting {i}"} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = tmp_path / "run"
    args = [
        "--model",
        "random:tiny-llama",
        "--data",
        str(data),
        "--max-new-tokens",
        "2",
        "--n-resamples",
        "5",
    ]
    assert main(["evaluate", *args, "--output-dir", str(run)]) == 0
    files = {
        "config.yaml": "yaml",
        "metadata.json": "json",
        "metrics/validation.json": "json",
        "predictions/validation.jsonl": "jsonl",
    }
    tried, findings = 0, []
    for rel, kind in files.items():
        text = (run / rel).read_text(encoding="utf-8")
        docs = [json.loads(line) for line in text.splitlines()] if kind == "jsonl" else []
        doc = docs[0] if kind == "jsonl" else (yaml.safe_load(text) if kind == "yaml" else json.loads(text))
        for path in list(key_paths(doc)):
            for value in WRONG:
                broken = tmp_path / "broken"
                shutil.rmtree(broken, ignore_errors=True)
                shutil.copytree(run, broken)
                new = replaced(doc, path, value)
                if kind == "jsonl":
                    content = "".join(json.dumps(d) + "\n" for d in [new, *docs[1:]])
                else:
                    content = yaml.safe_dump(new) if kind == "yaml" else json.dumps(new)
                (broken / rel).write_text(content, encoding="utf-8")
                tried += 1
                problem = outcome(
                    ["report", str(broken), str(run), "--output", str(tmp_path / "r"), "--n-resamples", "5"]
                )
                if problem:
                    findings.append(f"{rel}:{'.'.join(map(str, path))}={value!r}: {problem}")
    print(f"report: {tried} wrong values tried")
    assert tried > 500 and not findings, findings[:10]


@pytest.mark.parametrize(
    "verb, config, flag",
    [
        ("train", "configs/smollm2-lora-cpu.yaml", "--print-config"),
        ("run", "experiments/quickstart.yaml", "--dry-run"),
        ("run", "experiments/peft-methods.yaml", "--dry-run"),  # every method's section
    ],
)
def test_configs_survive_every_wrong_value(verb: str, config: str, flag: str, tmp_path: Path) -> None:
    for folder in ("configs", "experiments"):  # copied together: their relative paths still resolve
        shutil.copytree(REPO / folder, tmp_path / folder)
    target = tmp_path / config
    doc = yaml.safe_load(target.read_text(encoding="utf-8"))
    tried, findings = 0, []
    for path in list(key_paths(doc)):
        for value in [*WRONG, math.inf, 2**70, "2024-01-01"]:
            target.write_text(yaml.safe_dump(replaced(doc, path, value)), encoding="utf-8")
            tried += 1
            problem = outcome([verb, str(target), flag])
            if problem:
                findings.append(f"{'.'.join(map(str, path))}={value!r}: {problem}")
    print(f"{verb} {config}: {tried} wrong values tried")
    assert tried > 300 and not findings, findings[:10]
