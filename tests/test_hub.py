"""Without a network, hub ids fail in about a second (not after ~25 s of retries), in one line."""

from __future__ import annotations

import os
import socket
import time

import pytest

import dialogtune.hub as hub
from dialogtune.cli import main


@pytest.fixture
def fresh_hub_state(monkeypatch: pytest.MonkeyPatch):
    """Each test probes afresh; offline flags the code under test sets are undone afterwards."""
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # go_offline_if_unreachable writes to it
    hub.hub_reachable.cache_clear()
    yield monkeypatch
    hub.hub_reachable.cache_clear()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when we return: connections are refused


def test_reachability_probe(fresh_hub_state) -> None:
    fresh_hub_state.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub.hub_reachable() is False
    with socket.socket() as server:  # something listening: reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        fresh_hub_state.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        hub.hub_reachable.cache_clear()
        assert hub.hub_reachable() is True
    hub.hub_reachable.cache_clear()
    fresh_hub_state.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # behind a proxy: no probe, assume yes
    assert hub.hub_reachable() is True
    hub.hub_reachable.cache_clear()
    fresh_hub_state.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False


def test_unreachable_hub_switches_the_libraries_offline(fresh_hub_state) -> None:
    import datasets.config
    import huggingface_hub.constants

    fresh_hub_state.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub.go_offline_if_unreachable() is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "generate",
                "--model",
                "some-org/not-cached-model",
                "--data",
                "x.jsonl",
                "--output",
                "out.jsonl",
            ],
            "cannot load 'some-org/not-cached-model': the hub (127.0.0.1) is unreachable",
        ),
        (
            ["data", "inspect", "--data", "some-org/not-cached-data", "--split", "test"],
            "could not load dataset 'some-org/not-cached-data': the hub (127.0.0.1) is unreachable",
        ),
    ],
)
def test_offline_hub_ids_fail_fast_in_one_line(fresh_hub_state, tmp_path, capsys, args, message) -> None:
    fresh_hub_state.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    (tmp_path / "x.jsonl").write_text('{"id": "a", "dialogue": "#Person1#: Hi."}\n')
    fresh_hub_state.chdir(tmp_path)
    start = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - start < 10  # was ~25-30 s of retries
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
