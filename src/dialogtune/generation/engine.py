"""Continuous batching for decoder-only models, with outputs independent of the batch.

Up to ``slots`` sequences decode together; when one finishes, the next waiting prompt is
prefilled into its slot before the next step, so the batch stays full and no step is spent on
finished rows or padding. New requests can join between any two steps (the server's
admission), and every generated token can be reported as it is chosen (streaming).

Exactness comes from :mod:`dialogtune.generation.ragged`: a sequence's tokens do not depend on
the batch size, the order, or the other sequences — greedy output equals one-at-a-time output
at any precision. Greedy decoding, repetition penalty, no-repeat n-grams and sampling
(temperature, top-k, top-p; one seeded generator per request) use transformers' own logits
processors. While few sequences decode, a step also checks draft tokens copied from each
sequence's own text (:mod:`dialogtune.generation.lookup`): more tokens per step, the same tokens.
Beam search and encoder-decoder models take transformers' ``generate``
(:mod:`dialogtune.generation.batched`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from dialogtune.generation import lookup, uniform_rows
from dialogtune.generation.ragged import ATTENTION, MAX_ROWS, RaggedCache
from dialogtune.generation.settings import GenerationSettings
from dialogtune.generation.uniform_rows import BASE_ROW
from dialogtune.methods import method_of_model
from dialogtune.models.kinds import kind_for_config
from dialogtune.models.loaded import innermost

# Model families whose attention is plain causal self-attention (no sliding window, no
# soft-capping): what the ragged attention computes. Others use transformers' generate.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2", "granite")


@dataclass
class Request:
    """One prompt to complete."""

    index: int
    prompt: list[int]
    max_new_tokens: int
    adapter: str | None = None  # PEFT adapter name for this row (multi-adapter models)
    processors: LogitsProcessorList | None = None
    generator: torch.Generator | None = None  # sampling only
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    stopped_by_eos: bool = False


def supports(model: torch.nn.Module) -> bool:
    """Whether the ragged engine can run ``model`` (else: transformers' generate)."""
    config = innermost(model).config
    if not kind_for_config(config).continuous_batching or config.model_type not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "sliding_window", None) is not None or getattr(config, "attn_logit_softcapping", None):
        return False
    # Prompt tuning adds virtual tokens the engine does not feed; the method says so.
    method = method_of_model(model)
    if method is not None:
        return not method.prepends_tokens
    if isinstance(model, PeftModel):  # an adapter of no method dialogtune knows: PEFT's own flag
        return not getattr(model.peft_config[model.active_adapter], "is_prompt_learning", False)
    return True


def make_request(
    index: int, prompt: list[int], settings: GenerationSettings, adapter: str | None = None
) -> Request:
    """A request with transformers' logits processors for ``settings`` (greedy needs none)."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    generator = None
    if settings.do_sample:
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
        # One generator per request: its samples do not depend on the batch either.
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + index)
    return Request(
        index=index,
        prompt=list(prompt),
        max_new_tokens=settings.max_new_tokens,
        adapter=adapter,
        processors=processors or None,
        generator=generator,
    )


def decode_slots(model: torch.nn.Module, slots: int) -> int:
    """How many sequences the engine decodes at once when ``slots`` are asked for.

    On a CPU more rows per step would round differently (ragged.MAX_ROWS), and past 16 rows a
    step's products are compute-bound anyway (32 vs 64 slots: 3% on SmolLM2, one thread). A
    GPU's kernels were not measured here; it gets the slots asked for."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return min(slots, MAX_ROWS) if on_cpu else slots


def cache_bytes(model: torch.nn.Module, slots: int, prompt_tokens: int, max_new_tokens: int) -> int:
    """The memory of the engine's cache when ``slots`` are asked for (:func:`decode_slots`),
    sized for a prompt of ``prompt_tokens`` tokens (what :meth:`RaggedEngine._prefill` asks
    for), fp32 keys and values."""
    layers, kv_heads, head_dim = _cache_shape(innermost(model).config)
    rows = decode_slots(model, slots)
    return RaggedCache.nbytes(layers, rows, prompt_tokens + max_new_tokens + 1, kv_heads, head_dim)


def _cache_shape(config: Any) -> tuple[int, int, int]:
    """Layers, key/value heads and head size of a decoder config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


class RaggedEngine:
    """Runs :class:`Request` objects through ``model`` in up to ``slots`` cache slots."""

    def __init__(
        self,
        model: torch.nn.Module,
        stop_ids: Iterable[int],
        slots: int,
        *,
        per_row_adapters: bool = False,
        lookahead: int = 0,
        draft_memory: int = 0,
    ) -> None:
        """``per_row_adapters``: each request names its PEFT adapter (``None``: the bare base), as
        in a server holding several; otherwise the model runs as it is. ``lookahead``: up to this
        many draft tokens per sequence and step, copied from its own text (:mod:`.lookup`), or
        else from the last ``draft_memory`` outputs of the same adapter (0: its own text only)."""
        self.model = model
        self.lookahead = lookahead
        self.recent = lookup.Recent(draft_memory) if lookahead and draft_memory else None
        self.stop_ids = {int(i) for i in stop_ids}
        self.slots = decode_slots(model, slots)
        self.cache: RaggedCache | None = None
        self.config = innermost(model).config
        self.per_row_adapters = per_row_adapters
        self.steps = 0  # decode steps run (for statistics)
        self.drafted = self.accepted = 0  # draft tokens checked, and those that were right
        # (model, its adapter configs, whether uniform_rows covers every adapter layer): see _direct_path()
        self._direct: tuple[torch.nn.Module, list[tuple[str, Any]], bool] | None = None

    # ---- the loop -------------------------------------------------------------------------------

    def run(
        self,
        requests: Iterable[Request],
        *,
        on_token: Callable[[Request, int], None] | None = None,
        on_done: Callable[[Request], None] | None = None,
        admit: Callable[[], list[Request]] | None = None,
        on_step: Callable[[list[Request]], None] | None = None,
    ) -> None:
        """Complete every request (and those ``admit()`` returns between steps); ``on_step(rows)``
        after each decode step with the requests that took part."""
        waiting: deque[Request] = deque(requests)
        active: list[Request] = []
        with torch.inference_mode():
            while True:
                if admit is not None:
                    waiting.extend(admit())
                while waiting and len(active) < self.slots:
                    request = waiting.popleft()
                    self._prefill(request, len(active), on_token)
                    if request.finished:
                        self._cache().clear(len(active))
                        self._remember(request)
                        if on_done is not None:
                            on_done(request)
                    else:
                        active.append(request)
                if not active:
                    if waiting or (admit is not None and self._more(admit, waiting)):
                        continue
                    return
                self._decode(active, on_token)
                if on_step is not None:
                    on_step(active)
                self._retire(active, on_done)

    @staticmethod
    def _more(admit: Callable[[], list[Request]], waiting: deque[Request]) -> bool:
        waiting.extend(admit())
        return bool(waiting)

    def _retire(self, active: list[Request], on_done: Callable[[Request], None] | None) -> None:
        """Drop finished rows, keeping the live slots 0..n-1 (the last live one moves down)."""
        cache = self._cache()
        for i in reversed(range(len(active))):
            if not active[i].finished:
                continue
            self._remember(active[i])
            if on_done is not None:
                on_done(active[i])
            last = len(active) - 1
            if i != last:
                cache.move(last, i)
                active[i] = active[last]
            cache.clear(last)
            active.pop()

    # ---- one step -------------------------------------------------------------------------------

    def _prefill(self, request: Request, slot: int, on_token: Callable[[Request, int], None] | None) -> None:
        cache = self._cache(len(request.prompt) + request.max_new_tokens + 1)
        prompt = torch.tensor([request.prompt], dtype=torch.long)
        rows = 2 if len(request.prompt) == 1 else 1  # never a one-row matrix product (see ragged.py)
        cache.begin_prefill(slot)
        output = self._forward(
            input_ids=prompt.expand(rows, -1),
            position_ids=torch.arange(prompt.shape[1]).expand(rows, -1),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            batch=[request] * rows,
        )
        cache.finish("prefill", slot, len(request.prompt))
        self._choose([request], output.logits[:1, -1], on_token)

    def _decode(self, active: list[Request], on_token: Callable[[Request, int], None] | None) -> None:
        drafts = self._drafts(active)
        if any(drafts):
            self._decode_drafts(active, drafts, on_token)
            return
        cache = self._cache()
        live = len(active)
        rows = torch.arange(live) if live > 1 else torch.zeros(2, dtype=torch.long)
        batch = active if live > 1 else active * 2
        last = torch.tensor([[r.tokens[-1]] for r in batch], dtype=torch.long)
        positions = cache.lengths[rows].view(-1, 1).clone()
        lengths = cache.begin_decode(rows)
        output = self._forward(
            input_ids=last,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            dialogtune_lengths=lengths,
            dialogtune_groups=cache.groups,
            batch=batch,
        )
        cache.finish("decode", rows)
        self.steps += 1
        self._choose(active, output.logits[:live, -1], on_token)

    def _drafts(self, active: list[Request]) -> list[list[int]]:
        """Each request's draft for this step (empty while the step is too large: lookup.ROWS)."""
        if not self.lookahead or len(active) >= lookup.ROWS:
            return [[] for _ in active]
        return lookup.drafts(
            [r.prompt + r.tokens for r in active],
            [r.max_new_tokens - len(r.tokens) - 1 for r in active],  # a step yields 1 + len(draft)
            self.lookahead,
            self.recent,
            [r.adapter for r in active],
        )

    def _remember(self, request: Request) -> None:
        """A finished output joins the recent ones that drafts may copy from."""
        if self.recent is not None:
            self.recent.remember(request.adapter, request.prompt, request.tokens)

    def _decode_drafts(
        self, active: list[Request], drafts: list[list[int]], on_token: Callable[[Request, int], None] | None
    ) -> None:
        """One step that also checks each request's draft: every draft token is one more row, fed
        the token at its own position in its request's slot, so row j of a request computes what
        the j-th next plain step would compute, bit for bit (rows do not see each other: see
        ragged.py). The request keeps its tokens up to the first one the draft got wrong."""
        cache = self._cache()
        starts = cache.lengths[: len(active)].tolist()
        # Row order: every sequence's first row, then the second rows of those with a draft, and
        # so on: each run of rows reads distinct slots, mostly as views (ragged.row_groups).
        order = [
            (slot, j)
            for j in range(1 + max(len(d) for d in drafts))
            for slot, draft in enumerate(drafts)
            if j <= len(draft)
        ]
        row_of = {where: row for row, where in enumerate(order)}
        inputs = [active[slot].tokens[-1] if j == 0 else drafts[slot][j - 1] for slot, j in order]
        batch = [active[slot] for slot, _ in order]
        rows = torch.tensor([slot for slot, _ in order], dtype=torch.long)
        positions = torch.tensor([starts[slot] + j for slot, j in order], dtype=torch.long)
        lengths = cache.begin_decode(rows, positions)
        output = self._forward(
            input_ids=torch.tensor(inputs, dtype=torch.long).view(-1, 1),
            position_ids=positions.view(-1, 1),
            cache=cache,
            use_cache=True,
            dialogtune_lengths=lengths,
            dialogtune_groups=cache.groups,
            batch=batch,
        )
        self.steps += 1
        logits = output.logits[:, -1]
        for slot, (request, draft) in enumerate(zip(active, drafts)):
            used = 0
            for expected in [*draft, None]:
                token = self._choose_one(request, logits[row_of[slot, used]], on_token)
                used += 1
                if request.finished or token != expected:
                    break
            cache.settle(slot, starts[slot] + used, starts[slot] + 1 + len(draft))
            self.drafted += len(draft)
            self.accepted += used - 1

    def _choose(
        self, requests: list[Request], logits: torch.Tensor, on_token: Callable[[Request, int], None] | None
    ) -> None:
        for request, row in zip(requests, logits):
            self._choose_one(request, row, on_token)

    def _choose_one(
        self, request: Request, logits: torch.Tensor, on_token: Callable[[Request, int], None] | None
    ) -> int:
        scores = logits.float().unsqueeze(0)
        if request.processors is not None:
            seen = torch.tensor([request.prompt + request.tokens], dtype=torch.long)
            scores = request.processors(seen, scores)
        if request.generator is not None:
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs[0], 1, generator=request.generator))
        else:
            token = int(scores[0].argmax())
        request.tokens.append(token)
        if token in self.stop_ids:
            request.finished = request.stopped_by_eos = True
        elif len(request.tokens) >= request.max_new_tokens:
            request.finished = True
        if on_token is not None:
            on_token(request, token)
        return token

    # ---- plumbing -------------------------------------------------------------------------------

    def _adapters(self, batch: list[Request]) -> tuple[dict[str, Any], AbstractContextManager[None]]:
        """The forward pass's adapter arguments: PEFT's per-row names, or, when every row uses
        one adapter, the direct path for it (same bits, without the per-row machinery:
        :mod:`dialogtune.generation.uniform_rows`)."""
        if not self.per_row_adapters or not isinstance(self.model, PeftModel):
            return {}, nullcontext()
        names = [r.adapter or BASE_ROW for r in batch]
        if len(set(names)) == 1 and self._direct_path():
            return {}, uniform_rows.one_adapter(names[0])
        return {"adapter_names": names}, nullcontext()

    def _direct_path(self) -> bool:
        """Whether the direct path covers every adapter layer of the model (:func:`uniform_rows.install`).

        The module walk behind it (~3 ms for SmolLM2 with LoRA: 2,500 modules) is redone only when
        the model or its adapters have changed since the last step: a server loads and unloads
        adapters between steps, and each load brings a new config object (held here, so that its
        identity cannot be reused by another)."""
        configs = list(self.model.peft_config.items())
        cached = self._direct
        if (
            cached is None
            or cached[0] is not self.model
            or len(cached[1]) != len(configs)
            or any(a != b or c is not d for (a, c), (b, d) in zip(cached[1], configs))
        ):
            self._direct = (self.model, configs, uniform_rows.install(self.model))
        return self._direct[2]

    def _cache(self, needed: int = 0) -> RaggedCache:
        """The cache, created on first use and grown (contents kept) when a request needs more room."""
        if self.cache is not None and needed <= self.cache.capacity:
            return self.cache
        layers, kv_heads, head_dim = _cache_shape(self.config)
        grown = RaggedCache(
            layers=layers,
            slots=self.slots,
            capacity=max(needed, 2 * self.cache.capacity if self.cache is not None else 0),
            kv_heads=kv_heads,
            head_dim=head_dim,
            device=next(self.model.parameters()).device,
        )
        if self.cache is not None:
            old = self.cache
            for layer, (keys, values) in enumerate(zip(old.keys, old.values)):
                if keys is not None and values is not None:
                    new_keys, new_values = grown.buffers(layer, keys.dtype, values.dtype)
                    new_keys[:, :, : keys.shape[2]] = keys
                    new_values[:, :, : values.shape[2]] = values
            grown.lengths.copy_(old.lengths)
        self.cache = grown
        return grown

    def _forward(self, batch: list[Request], **inputs: Any) -> Any:
        """One forward pass with the ragged attention (only for it: whatever runs between steps, a
        server's adapter load say, sees the model's own attention)."""
        config = self.config
        before = config._attn_implementation
        config._attn_implementation = ATTENTION
        adapters, context = self._adapters(batch)
        try:
            with context:
                return self.model(**inputs, **adapters)
        finally:
            config._attn_implementation = before
