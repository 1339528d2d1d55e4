"""Evaluating a model served behind an OpenAI-compatible endpoint (``dialogtune serve``, vLLM).

``dialogtune evaluate --endpoint URL`` loads no weights. It builds every prompt here, exactly as
a local evaluation does (the tokenizer of ``--model``; the adapter's saved prompt, or the
flags; dialogues cut to ``max_dialogue_tokens``), and sends the prompt's **token ids** to
``URL/completions`` with ``temperature: 0``: the server runs the very tokens dialogtune would,
whatever chat template or default system prompt it would add to chat messages. The summaries
are then scored and written like a local run's (:func:`~dialogtune.experiments.evaluate.evaluate_to_dir`),
and an interrupted run resumes from the same ``.partial`` file.

Only the standard library talks to the endpoint; requests run ``concurrency`` at a time (the
server batches them). A server that is busy (429, 503) is retried with backoff; anything else
it refuses ends the run with one line, keeping the summaries already received.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dialogtune.data.records import Record
from dialogtune.data.sources import data_fingerprint
from dialogtune.errors import ConfigError, DialogtuneError
from dialogtune.generation import GenerationSettings
from dialogtune.models.fingerprint import digest
from dialogtune.models.specs import ModelSpec, resolve_spec
from dialogtune.predict import _open_partial, read_partial
from dialogtune.prompts import PromptTemplate

_RETRIES = 5  # for 429 and 503 answers, with growing waits


@dataclass(frozen=True)
class Endpoint:
    """Where the model is served: the API's base URL (ending in ``/v1``) and the model's name there."""

    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint must be an http:// or https:// URL, got '{self.url}'")
        if not 1 <= self.concurrency <= 256:
            raise ConfigError(f"--concurrency must be between 1 and 256, got {self.concurrency}")

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:200] or type(exc).__name__


def _message(body: bytes) -> str:
    """The error message of an OpenAI-shaped (or FastAPI-shaped) error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        return " ".join(str(error).split())[:300]
    return str(data)[:200]


class EndpointModel:
    """What an evaluation needs of a model, for one that runs behind ``endpoint``.

    ``spec``/``adapter`` are the local ``--model``/``--adapter``: they give the tokenizer and
    the prompt. Nothing is loaded but the tokenizer.
    """

    def __init__(self, model: str, adapter: str | None, endpoint: Endpoint) -> None:
        from dialogtune.models.loading import load_tokenizer

        self.spec: ModelSpec = resolve_spec(model)
        self.adapter = adapter
        self.endpoint = endpoint
        self.tokenizer = load_tokenizer(self.spec)
        self.kind = _model_kind(self.spec)
        self.card: dict[str, Any] = {}

    # ---- talking to the endpoint ------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request, retried while the server says it is busy; a one-line error otherwise."""
        endpoint = self.endpoint
        url = endpoint.base + path
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(_RETRIES + 1):
            request = urllib.request.Request(url, data, headers, method="POST" if data else "GET")
            try:
                with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
                    return json.load(response)
            except urllib.error.HTTPError as exc:
                message = _message(exc.read())
                if exc.code in (429, 503) and attempt < _RETRIES:
                    wait_s = float(exc.headers.get("Retry-After") or 0) or 2.0**attempt
                    time.sleep(min(wait_s, 30.0))
                    continue
                if exc.code == 401:
                    message += " (pass the key's environment variable with --endpoint-key-env)"
                raise DialogtuneError(f"{url} answered {exc.code}: {message}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, DNS, timeout, not JSON
                raise DialogtuneError(f"cannot reach the endpoint {url}: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Fail early, with one line, unless the endpoint answers and serves the model."""
        try:
            listing = self._call("/models")
        except DialogtuneError as exc:
            if " answered 404" in str(exc):
                raise DialogtuneError(
                    f"no OpenAI-compatible API at {self.endpoint.base} (GET /models: 404); "
                    "the URL should end in /v1"
                ) from None
            raise
        cards = listing.get("data") if isinstance(listing, dict) else None
        ids = [c.get("id") for c in cards or [] if isinstance(c, dict)]
        name = self.endpoint.model
        if name not in ids:
            served = ", ".join(map(str, ids)) or "nothing"
            raise DialogtuneError(
                f"{self.endpoint.base} does not serve a model named '{name}' (it serves {served}); "
                "set --endpoint-model"
            )
        card = next(c for c in cards or [] if isinstance(c, dict) and c.get("id") == name)
        # What identifies the served model (a restart changes "created"; the adapter folder does not).
        self.card = {key: card.get(key) for key in ("id", "root", "parent")}

    def complete(self, prompt: list[int], settings: GenerationSettings) -> tuple[str, int, int]:
        """(summary, prompt tokens, completion tokens) for one prompt, greedy."""
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "prompt": prompt,
            "max_tokens": settings.max_new_tokens,
            "temperature": 0,
            "n": 1,
        }
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty  # vLLM's extension, and ours
        answer = self._call("/completions", body)
        try:
            text = answer["choices"][0]["text"]
            usage = answer.get("usage") or {}
        except (KeyError, IndexError, TypeError):
            raise DialogtuneError(
                f"{self.endpoint.base}/completions answered without choices[0].text"
            ) from None
        # dialogtune's summaries are the decoded text stripped (generation.run)
        return (
            str(text).strip(),
            int(usage.get("prompt_tokens") or len(prompt)),
            int(usage.get("completion_tokens") or 0),
        )

    # ---- what evaluate_to_dir needs -------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {"url": self.endpoint.base, "model": self.endpoint.model, "served": self.card}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.spec.raw,
            "source": self.spec.source,
            "random_weights": self.spec.is_random,
            "kind": self.kind.name,
            "adapter": self.adapter,
            "endpoint": self.endpoint.base,
            "endpoint_model": self.endpoint.model,
            "served": self.card,
        }

    def prompt_ids(
        self, dialogues: Sequence[str], settings: GenerationSettings, template: PromptTemplate
    ) -> list[list[int]]:
        """The token ids a local run feeds the model (:func:`dialogtune.generation.build_prompts`)."""
        from dialogtune.generation import build_prompts

        prompts = build_prompts(self, dialogues, template, settings.max_dialogue_tokens)  # type: ignore[arg-type]
        return self.kind.encode_prompts(self.tokenizer, prompts)

    def predict_records(
        self,
        records: Sequence[Record],
        settings: GenerationSettings,
        template: PromptTemplate,
        *,
        partial_path: str | os.PathLike[str] | None = None,
        progress: bool | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        """Summaries in record order plus stats, like :func:`dialogtune.predict.predict_records`."""
        if settings.num_beams > 1 or settings.do_sample or settings.no_repeat_ngram_size:
            raise ConfigError(
                "--endpoint evaluates greedy decoding (with --repetition-penalty at most); "
                "--num-beams, --do-sample and --no-repeat-ngram-size need a local model"
            )
        key = digest(
            {
                "endpoint": self.identity(),
                "model": self.spec.raw,
                "adapter": self.adapter,
                "generation": settings.identity(),
                "prompt": template.to_dict(),
                "data": data_fingerprint(records),
            }
        )
        partial = Path(partial_path) if partial_path is not None else None
        done, good = read_partial(partial, key) if partial is not None else ({}, 0)
        wanted = {r.id for r in records}
        done = {i: text for i, text in done.items() if i in wanted}
        todo = [r for r in records if r.id not in done]
        prompts = self.prompt_ids([r.dialogue for r in todo], settings, template)
        counts = {"prompt_tokens": 0, "generated_tokens": 0}
        start = time.perf_counter()
        handle = _open_partial(partial, key, good) if partial is not None and todo else None
        lock = threading.Lock()
        show = progress if progress is not None else len(todo) > 1
        bar = tqdm(
            total=len(todo), desc=f"summarizing via {self.endpoint.base}", unit="dlg", disable=not show
        )

        stopping = False

        def one(record: Record, prompt: list[int]) -> None:
            text, prompt_tokens, completion_tokens = self.complete(prompt, settings)
            with lock:
                if stopping:  # the run has ended (an error, Ctrl-C): the partial file is closed
                    return
                done[record.id] = text
                counts["prompt_tokens"] += prompt_tokens
                counts["generated_tokens"] += completion_tokens
                if handle is not None:
                    line = json.dumps({"id": record.id, "prediction": text}, ensure_ascii=False) + "\n"
                    handle.write(line.encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
                bar.update(1)

        pool = ThreadPoolExecutor(max_workers=self.endpoint.concurrency, thread_name_prefix="endpoint")
        try:
            pending: set[Future[None]] = {pool.submit(one, r, p) for r, p in zip(todo, prompts)}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # the first error ends the run; finished rows are in the partial file
        finally:
            with lock:  # requests still in flight are dropped (a rerun asks again), not waited for
                stopping = True
                if handle is not None:
                    handle.close()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        seconds = time.perf_counter() - start
        stats = {
            "n": len(records),
            "resumed": len(records) - len(todo),
            "generation_seconds": round(seconds, 3),
            "seconds_per_dialogue": round(seconds / len(todo), 4) if todo else None,
            **counts,
            "tokens_per_second": round(counts["generated_tokens"] / seconds, 2)
            if todo and seconds > 0
            else None,
            "run_key": key,
            "endpoint": self.endpoint.base,
            "endpoint_model": self.endpoint.model,
            "concurrency": self.endpoint.concurrency,
        }
        return [done[r.id] for r in records], stats


def _model_kind(spec: ModelSpec) -> Any:
    """Seq2seq or causal, from the model's config alone (no weights)."""
    from transformers import AutoConfig

    from dialogtune.models.kinds import CAUSAL, kind_for_config
    from dialogtune.models.loading import random_config

    if spec.source == "random":
        return kind_for_config(random_config(spec))
    if spec.source in ("gguf", "embedded"):  # GGUF files hold decoder-only models
        return CAUSAL
    try:
        config = AutoConfig.from_pretrained(spec.location, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure is the same one line for the user
        raise DialogtuneError(f"cannot read the config of '{spec.raw}': {_reason(exc)}") from None
    return kind_for_config(config)
