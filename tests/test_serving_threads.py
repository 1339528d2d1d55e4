"""The server's model thread gets every core, and the loading (main) thread leaves no OpenMP pool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dialogtune.generation import GenerationSettings
from dialogtune.models import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.serving import AdapterRegistry, threads
from dialogtune.serving.batcher import MicroBatcher
from dialogtune.serving.continuous import ContinuousBatcher


@pytest.fixture
def held_threads():
    """Hold 3 threads for the model thread (as `dialogtune serve` does); restore afterwards."""
    before = torch.get_num_threads()
    assert threads.hold_for_model_thread(3) == 3
    assert torch.get_num_threads() == 1  # the main thread computes on one
    yield 3
    threads.release()
    torch.set_num_threads(before)


def test_hold_defaults_to_torchs_count_and_the_main_thread_keeps_its_own():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert threads.hold_for_model_thread() == 2 and threads.held() == 2
        threads.enter_model_thread()  # on the main thread: changes nothing
        assert torch.get_num_threads() == 1
    finally:
        threads.release()
        torch.set_num_threads(before)
    assert threads.held() is None


def test_the_continuous_batchers_model_thread_takes_the_held_count(held_threads):
    registry = AdapterRegistry(load_model("random:tiny-llama", dtype="fp32"))
    template = PromptTemplate()
    batcher = ContinuousBatcher(
        registry,
        lambda d, a, s: registry.prompt_ids(registry.loaded.tokenizer, d, a, s, template),
        max_batch_size=2,
    )

    async def main():
        seen = await batcher.run_exclusive(torch.get_num_threads)
        texts = await batcher.submit(
            ["#Person1#: Hi.\n#Person2#: Hello."], None, GenerationSettings(max_new_tokens=2)
        )
        await batcher.close()
        return seen, texts

    seen, texts = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert seen == held_threads and len(texts) == 1


def test_the_micro_batchers_model_thread_takes_the_held_count(held_threads):
    batcher = MicroBatcher(
        lambda dialogues, adapters, settings: [str(torch.get_num_threads())] * len(dialogues)
    )

    async def main():
        texts = await batcher.submit(["a"], None, GenerationSettings(max_new_tokens=2))
        await batcher.close()
        return texts

    assert asyncio.run(asyncio.wait_for(main(), timeout=30)) == [str(held_threads)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_loading_after_hold_starts_no_openmp_workers_on_the_main_thread():
    # In a fresh process: a parallel op on the main thread after hold_for_model_thread starts no
    # worker thread (else the model thread's pool would be throttled); on the model thread it does.
    script = textwrap.dedent(
        """
        import os, threading, torch
        from dialogtune.serving import threads
        count = lambda: len(os.listdir("/proc/self/task"))
        threads.hold_for_model_thread(2)
        start = count()
        torch.ones(2**24).mul_(2)  # large enough for a parallel region
        on_main = count() - start
        seen = []
        def model_thread():
            threads.enter_model_thread()
            torch.ones(2**24).mul_(2)
            seen.append((torch.get_num_threads(), count() - start))
        worker = threading.Thread(target=model_thread)
        worker.start(); worker.join()
        print(on_main, *seen[0])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    on_main, model_threads, grown = map(int, out.stdout.split())
    assert on_main == 0  # no pool left by the loading thread
    assert model_threads == 2 and grown >= 2  # the model thread itself and its OpenMP worker
