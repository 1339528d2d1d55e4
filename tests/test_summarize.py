"""``dialogtune summarize`` (text and JSONL, file and stdin) and ``dialogtune serve``'s start-up checks."""

from __future__ import annotations

import io
import json
import socket
import sys

import pytest
from fastapi.testclient import TestClient

from dialogtune.cli import main
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.inference import load_for_adapters, load_for_inference
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = "random:tiny-llama"
DIALOGUES = [
    "#Person1#: Lunch?\n#Person2#: Yes.",
    "#Person1#: Is the train late?\n#Person2#: Ten minutes.",
    "#Person1#: Can I pay by card?\n#Person2#: Of course.",
]
FAST = ["--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return str(make_random_adapter(SPEC, tmp_path_factory.mktemp("summarize") / "adapter", seed=3))


def expected(adapter: str | None = None, *, server: bool = False) -> list[str]:
    """What each path should give: summarize loads for inference (adapter merged, bf16 products
    over an fp32 residual stream); a server that attaches adapters at run time casts the whole
    model (and refines the top logits)."""
    load = load_for_adapters if server else load_for_inference
    loaded = load(SPEC, adapter=adapter)
    return generate(loaded, DIALOGUES, GenerationSettings(max_new_tokens=8)).texts


def feed_stdin(monkeypatch, text: str, tty: bool = False) -> None:
    stream = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8")
    monkeypatch.setattr(stream, "isatty", lambda: tty)
    monkeypatch.setattr(sys, "stdin", stream)


def test_plain_text_file(tmp_path, capsys):
    path = tmp_path / "dialogue.txt"
    path.write_text(DIALOGUES[1] + "\n")
    assert main(["summarize", "--model", SPEC, *FAST, str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == expected()[1] + "\n"
    assert "RANDOM WEIGHTS" in err


def test_jsonl_stdin_with_adapter_keeps_rows_and_order(monkeypatch, capsys, adapter_dir):
    rows = [{"id": f"d{i}", "dialogue": d, "summary": f"reference {i}"} for i, d in enumerate(DIALOGUES)]
    feed_stdin(monkeypatch, "".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert main(["summarize", "--model", SPEC, "--adapter", adapter_dir, *FAST, "-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in out] == ["d0", "d1", "d2"]
    assert [r["summary"] for r in out] == ["reference 0", "reference 1", "reference 2"]  # input left alone
    assert [r["prediction"] for r in out] == expected(adapter_dir) != expected()
    assert all(r["random_weights"] is True for r in out)


def test_text_on_stdin_and_forced_format(monkeypatch, capsys, tmp_path):
    feed_stdin(monkeypatch, DIALOGUES[0])
    assert main(["summarize", "--model", SPEC, *FAST]) == 0
    assert capsys.readouterr().out == expected()[0] + "\n"
    # A .jsonl name reads as JSONL; --format text reads the same file as one dialogue.
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"dialogue": DIALOGUES[2]}) + "\n")
    assert main(["summarize", "--model", SPEC, *FAST, str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == expected()[2]
    assert main(["summarize", "--model", SPEC, *FAST, "--format", "text", str(path)]) == 0
    assert not capsys.readouterr().out.startswith("{")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"dialogue": "a"}\n{"text": "b"}\n', "input.jsonl:2: field 'dialogue' is missing; fields: text"),
        ('{"dialogue": "a"}\n{"dialogue": \n', "input.jsonl:2:14: malformed JSON (Expecting value)"),
        ('{"dialogue": ""}\n', "input.jsonl:1: field 'dialogue' is not a non-empty string"),
        ('["a"]\n', "input.jsonl:1: expected a JSON object per line, got list"),
        ("\n\n", "input.jsonl: empty input"),
        # U+2028 inside a JSON string is not a line break: the bad row is still line 3.
        ('{"dialogue": "a\u2028b"}\n{"dialogue": "c"}\n{"dialogue": 1}\n', "input.jsonl:3: field 'dialogue'"),
    ],
)
def test_bad_jsonl_is_one_line_with_file_and_line(tmp_path, capsys, content, message):
    path = tmp_path / "input.jsonl"
    path.write_text(content)
    assert main(["summarize", "--model", SPEC, str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_other_input_errors(tmp_path, monkeypatch, capsys):
    assert main(["summarize", "--model", SPEC, str(tmp_path / "missing.txt")]) == 2
    assert "input file not found" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes(b"line one\ncaf\xe9\n")
    assert main(["summarize", "--model", SPEC, str(tmp_path / "latin1.txt")]) == 2
    assert "latin1.txt:2:4: not valid UTF-8 (byte 0xe9)" in capsys.readouterr().err
    feed_stdin(monkeypatch, "", tty=True)  # nothing piped in: say so instead of waiting forever
    assert main(["summarize", "--model", SPEC]) == 2
    assert "no input" in capsys.readouterr().err
    feed_stdin(monkeypatch, "  \n")
    assert main(["summarize", "--model", SPEC, "-"]) == 2
    assert "<stdin>: empty input" in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    """``serve`` sets up logging for a process of its own; put pytest's back afterwards."""
    import logging

    access = logging.getLogger("dialogtune.serving.access")
    saved = (access.handlers[:], access.propagate, access.level, logging.getLogger().level)
    yield
    access.handlers[:], access.propagate = saved[0], saved[1]
    access.setLevel(saved[2])
    logging.getLogger().setLevel(saved[3])


def test_serve_builds_the_app_and_binds_loopback_by_default(monkeypatch, adapter_dir, restore_logging):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setenv("DIALOGTUNE_API_TOKEN", "serve-test-token")
    assert (
        main(
            [
                "serve",
                "--model",
                SPEC,
                "--adapter",
                f"mine={adapter_dir}",
                "--port",
                "0",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    assert (
        seen["host"] == "127.0.0.1"
        and seen["access_log"] is False
        and seen["timeout_graceful_shutdown"] == 60
    )
    with TestClient(seen["app"]) as client:
        assert client.post("/v1/summarize", json={"dialogue": DIALOGUES[0]}).status_code == 401
        body = client.post(
            "/v1/summarize",
            json={"dialogues": DIALOGUES, "adapter": "mine"},
            headers={"Authorization": "Bearer serve-test-token"},
        ).json()
    assert body["summaries"] == expected(adapter_dir, server=True)


def test_serve_bad_input_is_one_line(tmp_path, capsys, restore_logging):
    cases = [
        (["--adapter", f"x={tmp_path / 'nope'}"], "adapter directory not found"),
        (["--adapter", "x="], "expected NAME=DIR"),
        (["--adapter", f"bad/name={tmp_path}"], "adapter name 'bad/name' must be"),
        (["--max-new-tokens", "600"], "serving.default_max_new_tokens must be between 1 and 512"),
        (["--adapter", f"x={tmp_path}", "--adapter", f"x={tmp_path}"], "names must be unique"),
    ]
    for extra, message in cases:
        assert main(["serve", "--model", SPEC, "--port", "0", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--model", SPEC, "--port", str(taken.getsockname()[1])]) == 2
        assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "70000"])
    assert exit_info.value.code == 2
