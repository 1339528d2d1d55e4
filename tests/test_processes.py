"""Engine processes: the dialogues split over forked processes, the summaries unchanged."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest
import torch

from dialogtune.cli import main
from dialogtune.data.records import Record
from dialogtune.errors import ConfigError
from dialogtune.generation import GenerationSettings, generate, processes
from dialogtune.generation.engine import RaggedEngine
from dialogtune.models import load_model
from dialogtune.predict import predict_records, run_key
from dialogtune.prompts import PromptTemplate

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="engine processes fork (Linux)"),
]

DIALOGUES = [
    f"#Person1#: {a}\n#Person2#: {b}"
    for a, b in [
        ("Hello, how are you?", "Fine, thanks."),
        ("Could you help me carry these boxes upstairs to the office?", "Sure, give me one."),
        ("Lunch?", "Yes."),
        ("I lost my keys somewhere in the park this morning.", "Let's go and look."),
        ("What time is it?", "Nine."),
        ("Do you want tea or coffee with the cake?", "Tea, please, with milk."),
        ("The train leaves at six from platform four.", "Then we should hurry."),
    ]
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny-llama", dtype="fp32")


def _settings(**overrides):
    return GenerationSettings(**{"max_new_tokens": 12, "batch_size": 2, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [{}, {"do_sample": True, "temperature": 1.3, "top_k": 20, "seed": 3}, {"repetition_penalty": 1.3}],
    ids=["greedy", "sampling", "repetition-penalty"],
)
def test_processes_give_the_same_summaries_each_reported_once(tiny, overrides):
    one = generate(tiny, DIALOGUES, _settings(processes=1, **overrides), progress=False)
    reported: list[int] = []
    three = generate(
        tiny,
        DIALOGUES,
        _settings(processes=3, **overrides),
        progress=False,
        on_batch=lambda indices, texts: reported.extend(indices),
    )
    assert one.processes == 1 and three.processes == 3
    assert three.texts == one.texts and any(one.texts)
    assert sorted(reported) == list(range(len(DIALOGUES)))  # each dialogue once, as it finished
    assert three.generated_tokens == one.generated_tokens > 0


def test_a_process_left_without_work_is_fine(tiny):
    # Whichever process starts first may take every prompt into its 16 slots, the other none.
    one = generate(tiny, DIALOGUES, _settings(batch_size=16, processes=1), progress=False)
    two = generate(tiny, DIALOGUES, _settings(batch_size=16, processes=2), progress=False)
    assert two.processes == 2 and two.texts == one.texts


def test_processes_bf16(one_torch_thread):
    loaded = load_model("random:tiny-llama", dtype="bf16")
    one = generate(loaded, DIALOGUES, _settings(processes=1), progress=False).texts
    assert generate(loaded, DIALOGUES, _settings(processes=2), progress=False).texts == one


def test_auto_starts_one_process_per_thread_only_when_each_gets_a_full_batch(tiny, monkeypatch):
    monkeypatch.setattr(processes, "_free_memory", lambda: 64 << 30)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    auto = _settings(batch_size=16)
    assert processes.resolve(auto, tiny.model, 64, 1 << 20) == 4
    assert processes.resolve(auto, tiny.model, 63, 1 << 20) == 1  # 3 full batches for 4 threads
    assert processes.resolve(auto, tiny.model, 10_000, 10 << 30) == 3  # caches within half the memory
    assert processes.resolve(auto, tiny.model, 10_000, 40 << 30) == 1
    assert processes.resolve(_settings(processes=5), tiny.model, 3, 1 << 20) == 3  # asked: at most one each
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert processes.resolve(auto, tiny.model, 10_000, 1 << 20) == processes.MAX_AUTO
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert processes.resolve(auto, tiny.model, 10_000, 1 << 20) == 1


def test_the_cache_estimate_is_what_the_engine_allocates(tiny):
    from dialogtune.generation.engine import cache_bytes, make_request
    from dialogtune.generation.run import build_prompts

    prompts = tiny.kind.encode_prompts(tiny.tokenizer, build_prompts(tiny, DIALOGUES, PromptTemplate(), None))
    prompts.sort(key=len, reverse=True)  # longest first, as generate() orders them
    runner = RaggedEngine(tiny.model, {-1}, slots=3)
    runner.run([make_request(i, p, _settings()) for i, p in enumerate(prompts)])
    allocated = sum(k.nbytes + v.nbytes for k, v in runner.cache.allocated())
    assert allocated == cache_bytes(tiny.model, 3, len(prompts[0]), _settings().max_new_tokens) > 0


def test_no_fork_off_the_main_thread(tiny):
    seen = []
    worker = threading.Thread(
        target=lambda: seen.append(processes.resolve(_settings(processes=4), tiny.model, 9, 1))
    )
    worker.start()
    worker.join()
    assert seen == [1]  # a server's model thread, say: forking a threaded process is unsafe


def test_the_training_probe_does_not_fork(tiny, monkeypatch):
    from dialogtune.training.callbacks import RougeProbe

    counts = []
    real = processes.resolve
    monkeypatch.setattr(processes, "resolve", lambda s, *a: counts.append(s.processes) or real(s, *a))
    records = [Record(str(i), d, ("a summary",)) for i, d in enumerate(DIALOGUES)]
    probe = RougeProbe(tiny, records, _settings(processes=4), PromptTemplate())
    probe(tiny.model)
    assert counts == [1]


def test_a_failing_process_is_one_clear_error(tiny, monkeypatch):
    from dialogtune.generation.processes import GenerationWorkerError

    def broken_run(self, requests, **kwargs):
        if os.getpid() != parent:
            raise RuntimeError("cache allocation failed")

    parent = os.getpid()
    monkeypatch.setattr(RaggedEngine, "run", broken_run)
    with pytest.raises(GenerationWorkerError, match="RuntimeError: cache allocation failed"):
        generate(tiny, DIALOGUES, _settings(processes=2), progress=False)


def test_a_killed_process_is_one_clear_error(tiny, monkeypatch):
    from dialogtune.generation.processes import GenerationWorkerError

    parent = os.getpid()
    real_run = RaggedEngine.run

    def killed(self, requests, **kwargs):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does
        return real_run(self, requests, **kwargs)

    monkeypatch.setattr(RaggedEngine, "run", killed)
    with pytest.raises(GenerationWorkerError, match="ended early .*-9.*--processes 1"):
        generate(tiny, DIALOGUES, _settings(processes=2), progress=False)


def test_a_run_resumes_with_another_process_count(tiny, tmp_path):
    records = [Record(str(i), d, ("a summary",)) for i, d in enumerate(DIALOGUES)]
    assert run_key(tiny, _settings(processes=1), PromptTemplate(), records) == run_key(
        tiny, _settings(processes=3), PromptTemplate(), records
    )
    assert run_key(tiny, _settings(), PromptTemplate(), records) != run_key(
        tiny, _settings(max_new_tokens=5), PromptTemplate(), records
    )
    assert _settings(processes=3).identity() == _settings().identity()
    partial = tmp_path / "partial.jsonl"
    first, _ = predict_records(tiny, records, _settings(processes=1), PromptTemplate(), partial_path=partial)
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:4]) + "\n")  # the key and 3 rows: an interrupted run
    texts, stats = predict_records(
        tiny, records, _settings(processes=2), PromptTemplate(), partial_path=partial
    )
    assert stats["resumed"] == 3 and stats["processes"] == 2
    assert texts == first


def test_bad_process_counts(tmp_path, capsys):
    with pytest.raises(ConfigError, match="generation.processes"):
        GenerationSettings(processes=-1)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "1", "dialogue": DIALOGUES[0], "summary": "s"}) + "\n")
    code = main(
        [
            "generate",
            "--model",
            "random:tiny-llama",
            "--data",
            str(data),
            "--processes",
            "-2",
            "--output",
            str(tmp_path / "o.jsonl"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "processes" in err


def test_an_interrupted_parent_leaves_no_process_behind(tiny):
    import multiprocessing

    def interrupt(indices, texts):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tiny, DIALOGUES, _settings(processes=3), progress=False, on_batch=interrupt)
    assert multiprocessing.active_children() == []


def test_the_process_count_is_in_no_identity(tmp_path):
    """Resumed runs, experiment stages and batch jobs may change it; identities stay as before it
    existed (so earlier outputs are still recognised)."""
    from dialogtune.batch.config import BatchConfig, ModelJob
    from dialogtune.batch.output import job_identity, provenance
    from dialogtune.experiments.config import EvaluationSpec

    assert "processes" not in GenerationSettings().identity()
    assert set(GenerationSettings().to_dict()) - set(GenerationSettings().identity()) == {
        "processes",
        "draft_memory",
    }
    spec = EvaluationSpec(generation=_settings(processes=1))
    assert spec.identity() == EvaluationSpec(generation=_settings(processes=4)).identity()
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "1", "dialogue": "x"}\n')

    def job(n):
        return BatchConfig(
            input=str(data), output=str(tmp_path / "out"), job=ModelJob(generation=_settings(processes=n))
        )

    assert job_identity(job(1), [data]) == job_identity(job(3), [data])
    assert provenance(job(1), False) == provenance(job(3), False)
