"""OpenAI request bodies → a :class:`Plan`: the adapter, decoding settings and prompt token ids.

* ``model`` is an adapter's name or the base model's id (404 ``model_not_found`` otherwise).
* Options map to :class:`~dialogtune.generation.GenerationSettings`: ``temperature`` 0 (below
  1e-5, as vLLM) is greedy, else sampling with ``top_p``/``top_k``; OpenAI's default
  temperature is 1, the summarize mode's is greedy, like ``/v1/summarize``. ``max_tokens`` is
  bounded by the server's ``max_new_tokens_limit``; only ``n=1``.
* Chat messages are rendered with the model's chat template exactly as vLLM does
  (``apply_chat_template(messages, add_generation_prompt=True)``, tokenized without added
  special tokens). With ``"dialogtune": {"summarize": true}`` the last user message is the
  dialogue, wrapped in the server's summarization prompt (the adapter's saved training prompt,
  :meth:`AdapterRegistry.prompt_ids`): the tokens ``/v1/summarize`` runs, under its limits.
* ``/v1/completions`` prompts are text (encoded as dialogtune encodes its prompts) or token ids.
* Limits: characters, prompt tokens (``max_prompt_tokens``), prompts per request and the cost
  bound ``max_request_cost`` (max_tokens × Σ(prompt + max_tokens)), as on ``/v1/summarize``.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dialogtune.errors import DialogtuneError
from dialogtune.generation import GenerationSettings
from dialogtune.serving.continuous import ContinuousBatcher
from dialogtune.serving.openai.errors import OpenAIError
from dialogtune.serving.openai.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
)

_SAMPLING_EPS = 1e-5


@dataclass
class Plan:
    """A request that passed every check, ready to run."""

    chat: bool
    model: str  # as the client named it, echoed back
    adapter: str | None
    prompts: list[list[int]]
    settings: GenerationSettings
    stops: list[str]
    strip: bool  # summarize mode: the text exactly as /v1/summarize returns it
    stream: bool
    include_usage: bool


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class RequestDecoder:
    """Turns OpenAI request bodies into :class:`Plan` objects, checking the server's limits."""

    def __init__(self, service: Any) -> None:  # service: app.SummarizeService
        self.service = service
        self.registry = service.registry
        self.config = service.config
        # Prompts are rendered and tokenized on the event loop, decoded text too: with a copy of
        # the tokenizer of its own (the model thread keeps the original).
        self.tokenizer = copy.deepcopy(self.registry.loaded.tokenizer)
        self.vocab = self.registry.loaded.model.get_input_embeddings().num_embeddings

    @property
    def continuous(self) -> bool:
        return isinstance(self.service.batcher, ContinuousBatcher)

    def model_ids(self) -> list[str]:
        registry = self.registry
        if registry.merged is not None:  # only the merged adapter is served
            return [registry.merged]
        return [registry.model_name, *registry.infos]

    def resolve(self, name: str) -> str | None:
        """The adapter ``name`` asks for (None: the base model)."""
        registry = self.registry
        if registry.merged is not None:
            if name == registry.merged:
                return name
        elif name in registry:
            return name
        elif name == registry.model_name:
            return None
        raise OpenAIError(
            404,
            f"the model '{name}' does not exist; this server serves {', '.join(self.model_ids())}",
            param="model",
            code="model_not_found",
        )

    def settings(self, body: SamplingFields, max_tokens: int | None, summarize: bool) -> GenerationSettings:
        cfg = self.config
        if (body.n or 1) != 1:
            raise OpenAIError(400, f"n={body.n}: only n=1 is supported (one choice per prompt)", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise OpenAIError(400, f"{name} is not supported (only 0)", param=name)
        if max_tokens is not None and max_tokens > cfg.max_new_tokens_limit:
            raise OpenAIError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {cfg.max_new_tokens_limit}",
                param="max_tokens",
            )
        # OpenAI's default temperature is 1 (sampling); the summarize mode keeps /v1/summarize's
        # default, greedy.
        temperature = body.temperature if body.temperature is not None else (0.0 if summarize else 1.0)
        sample = temperature >= _SAMPLING_EPS  # below it, logits / temperature overflow: greedy, as in vLLM
        return GenerationSettings(
            max_new_tokens=max_tokens or cfg.default_max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            top_k=body.top_k if body.top_k is not None and body.top_k > 0 else 0,
            repetition_penalty=body.repetition_penalty if body.repetition_penalty is not None else 1.0,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
            batch_size=cfg.max_batch_size,
            max_dialogue_tokens=cfg.max_dialogue_tokens,
            engine="auto" if self.continuous else "generate",
        )

    def summarize_prompt(self, messages: Sequence[ChatMessage], adapter: str | None) -> list[int]:
        """The last user message as a dialogue in the server's prompt, with /v1/summarize's limits."""
        cfg = self.config
        dialogue = next((m.text() for m in reversed(messages) if m.role == "user"), None)
        if dialogue is None:
            raise OpenAIError(
                400,
                "dialogtune.summarize takes the last user message as the dialogue; there is none",
                param="messages",
            )
        if not dialogue.strip():
            raise OpenAIError(400, "the last user message (the dialogue) is empty", param="messages")
        if len(dialogue) > cfg.max_dialogue_chars:
            raise OpenAIError(
                413,
                f"the dialogue has {len(dialogue)} characters; this server accepts at most "
                f"{cfg.max_dialogue_chars}",
                param="messages",
            )
        tokens = len(self.tokenizer(dialogue, add_special_tokens=False)["input_ids"])
        if tokens > cfg.max_dialogue_tokens:
            raise OpenAIError(
                413,
                f"the dialogue has {tokens} tokens; this server accepts at most {cfg.max_dialogue_tokens}",
                param="messages",
            )
        settings = GenerationSettings(max_dialogue_tokens=cfg.max_dialogue_tokens)
        try:
            return self.registry.prompt_ids(self.tokenizer, [dialogue], adapter, settings, cfg.template)[0]
        except DialogtuneError as exc:
            raise OpenAIError(400, str(exc), param="messages") from exc

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The messages through the model's chat template, as vLLM renders them."""
        cfg = self.config
        if not getattr(self.tokenizer, "chat_template", None):
            raise OpenAIError(
                400,
                "this model has no chat template; send a prompt to /v1/completions, or add "
                '"dialogtune": {"summarize": true} to summarize the last user message',
                param="messages",
            )
        chars = sum(len(m.text()) for m in messages)
        if chars > cfg.max_dialogue_chars:
            raise OpenAIError(
                413,
                f"the messages hold {chars} characters; this server accepts at most {cfg.max_dialogue_chars}",
                param="messages",
            )
        rendered = [
            {"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})} for m in messages
        ]
        try:
            text = self.tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # e.g. a template that refuses a system message
            raise OpenAIError(
                400, f"the model's chat template refused these messages: {_first_line(exc)}", param="messages"
            ) from exc
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompts(self, body: CompletionRequest) -> list[list[int]]:
        cfg = self.config
        prompts = body.prompts()
        if len(prompts) > cfg.max_dialogues_per_request:
            raise OpenAIError(
                413,
                f"{len(prompts)} prompts in one request; this server accepts at most "
                f"{cfg.max_dialogues_per_request}",
                param="prompt",
            )
        encoded = []
        for prompt in prompts:
            if isinstance(prompt, str):
                if len(prompt) > cfg.max_dialogue_chars:
                    raise OpenAIError(
                        413,
                        f"a prompt has {len(prompt)} characters; this server accepts at most "
                        f"{cfg.max_dialogue_chars}",
                        param="prompt",
                    )
                # As dialogtune encodes its own prompts: the tokenizer's BOS, never a trailing EOS
                # for decoder-only models; T5's EOS for encoder-decoder ones.
                encoded.append(self.registry.loaded.kind.encode_prompts(self.tokenizer, [prompt])[0])
            else:
                bad = next((t for t in prompt if t >= self.vocab), None)
                if bad is not None:
                    raise OpenAIError(
                        400,
                        f"token id {bad} is not in this model's vocabulary ({self.vocab} tokens)",
                        param="prompt",
                    )
                encoded.append(list(prompt))
        return encoded

    def check_size(self, prompts: list[list[int]], settings: GenerationSettings) -> None:
        cfg = self.config
        for ids in prompts:
            if len(ids) > cfg.max_prompt_tokens:
                raise OpenAIError(
                    413,
                    f"the prompt has {len(ids)} tokens; this server accepts at most {cfg.max_prompt_tokens}",
                    code="context_length_exceeded",
                )
        steps = settings.max_new_tokens  # as /v1/summarize's cost, with one beam
        cost = steps * sum(len(ids) + steps for ids in prompts)
        if cost > cfg.max_request_cost:
            raise OpenAIError(
                413,
                f"this request costs {cost} token-steps (max_tokens {steps} × prompt plus completion tokens); "
                f"this server's max_request_cost is {cfg.max_request_cost}",
            )

    def chat(self, body: ChatCompletionRequest) -> Plan:
        summarize = bool(body.dialogtune and body.dialogtune.summarize)
        adapter = self.resolve(body.model)
        if body.logprobs:
            raise OpenAIError(400, "logprobs are not supported", param="logprobs")
        if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
            raise OpenAIError(
                400, "max_tokens and max_completion_tokens differ; give one", param="max_tokens"
            )
        settings = self.settings(body, body.max_completion_tokens or body.max_tokens, summarize)
        prompt = (
            self.summarize_prompt(body.messages, adapter) if summarize else self.chat_prompt(body.messages)
        )
        return self._plan(body, True, adapter, [prompt], settings, summarize)

    def text(self, body: CompletionRequest) -> Plan:
        adapter = self.resolve(body.model)
        if body.echo:
            raise OpenAIError(400, "echo is not supported", param="echo")
        if body.logprobs is not None:
            raise OpenAIError(400, "logprobs are not supported", param="logprobs")
        settings = self.settings(body, body.max_tokens, False)
        return self._plan(body, False, adapter, self.text_prompts(body), settings, False)

    def _plan(
        self,
        body: SamplingFields,
        chat: bool,
        adapter: str | None,
        prompts: list[list[int]],
        settings: GenerationSettings,
        strip: bool,
    ) -> Plan:
        self.check_size(prompts, settings)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return Plan(
            chat,
            body.model,
            adapter,
            prompts,
            settings,
            body.stops(),
            strip,
            bool(body.stream),
            include_usage,
        )
