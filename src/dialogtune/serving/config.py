"""Server settings: limits, micro-batching, defaults for generation, auth.

One dataclass, validated in ``__post_init__`` like the other configs, mirrored by
the ``dialogtune serve`` flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dialogtune.errors import ConfigError
from dialogtune.generation.settings import DEFAULT_DRAFT_MEMORY, MAX_DRAFT_MEMORY, MAX_LOOKAHEAD
from dialogtune.prompts import PromptTemplate
from dialogtune.serving import schemas

# A server's lone requests gain from a third draft token once recent answers supply drafts too
# (benchmarks/drafts.py, SmolLM2-135M, one thread: over drafts from the dialogue alone, 1.21x with
# the CPU recipe's adapter and 1.38x zero-shot, against 1.14x / 1.31x with two); batch jobs keep
# generation.lookahead's 2: their steps are mostly too large to draft.
SERVING_LOOKAHEAD = 3
TOKEN_ENV = "DIALOGTUNE_API_TOKEN"


@dataclass
class ServingConfig:
    """How a server limits, batches and authenticates requests.

    The defaults suit a CPU box: a micro-batch of 16 dialogues keeps a 135M model's
    matrix multiplies busy, and 10 ms of waiting is nothing next to a generation
    that takes seconds.

    ``max_request_cost`` bounds the work of one request in *token-steps*: each of
    ``max_new_tokens`` decoding steps, for each beam of each dialogue, attends over at
    most the dialogue plus the summary so far, so a request costs
    ``num_beams × max_new_tokens × Σ (dialogue tokens + max_new_tokens)``. The default,
    4M, admits the largest ordinary request of the other defaults: 32 average DialogSum
    dialogues (210 tokens) summarized greedily in 200 tokens, 1 × 200 × 32 × 410 = 2.6M
    (or 8 of them with 4 beams, also 2.6M). The per-field limits alone admit 32 dialogues
    of 2,048 tokens × 4 beams × 512 new tokens = 168M, 42× more, which would hold a CPU
    for hours.
    """

    max_dialogue_chars: int = field(
        default=20_000, metadata={"help": "longest dialogue accepted, in characters"}
    )
    max_dialogue_tokens: int = field(default=2048, metadata={"help": "longest dialogue accepted, in tokens"})
    max_prompt_tokens: int = field(
        default=4096,
        metadata={
            "help": "longest prompt of the OpenAI-compatible /v1/completions and /v1/chat/completions, "
            "in tokens (413 beyond)"
        },
    )
    max_dialogues_per_request: int = field(default=32, metadata={"help": "most dialogues in one request"})
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata={"help": "largest request body"})
    default_max_new_tokens: int = field(
        default=200, metadata={"help": "summary length when a request gives none"}
    )
    max_new_tokens_limit: int = field(
        default=512, metadata={"help": "largest max_new_tokens a request may ask"}
    )
    max_batch_size: int = field(
        default=16,
        metadata={
            "help": "most dialogues decoded together (decoder-only models: continuous batching; "
            "1 handles requests one by one)"
        },
    )
    lookahead: int = field(
        default=SERVING_LOOKAHEAD,
        metadata={
            "help": "decoder-only models: while few requests decode, also check up to this many draft "
            "tokens per step, copied from the dialogue (prompt lookup; same output, lower latency); 0: off"
        },
    )
    draft_memory: int = field(
        default=DEFAULT_DRAFT_MEMORY,
        metadata={
            "help": "decoder-only models: a request whose own text gives no draft copies one from this "
            "many of the latest answers of its adapter (same output; answers like earlier ones come "
            "faster); 0: off"
        },
    )
    max_wait_ms: float = field(
        default=10.0,
        metadata={"help": "encoder-decoder models: how long an idle server waits for more requests to batch"},
    )
    max_queued_dialogues: int = field(default=512, metadata={"help": "beyond this, requests get 503"})
    max_request_cost: int = field(
        default=4_000_000, metadata={"help": "most token-steps one request may ask for (413 beyond)"}
    )
    max_adapters: int = field(default=16, metadata={"help": "most adapters loaded at once (409 beyond)"})
    max_connections: int = field(
        default=128, metadata={"help": "most requests in progress at once (503 beyond)"}
    )
    body_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds a client has to send its request body (408 beyond)"}
    )
    batching: str = field(
        default="auto",
        metadata={
            "help": "auto (continuous batching for decoder-only models, else micro-batches) or micro "
            "(static micro-batches through transformers' generate, as before continuous batching)"
        },
    )
    mixed_adapter_batches: bool = field(
        default=True,
        metadata={
            "help": "let adapters share a generate call (encoder-decoder models; decoder-only always do)"
        },
    )
    api_token: str | None = field(default=None, repr=False, metadata={"help": "bearer token; None: no auth"})
    adapter_root: Path | None = field(default=None, metadata={"help": "admin loads only adapters under this"})
    template: PromptTemplate = field(default_factory=PromptTemplate)

    def __post_init__(self) -> None:
        bounds = {
            "max_dialogue_chars": (1, schemas.MAX_DIALOGUE_CHARS),
            "max_dialogue_tokens": (1, 1_000_000),
            "max_prompt_tokens": (1, schemas.MAX_PROMPT_TOKENS),
            "max_dialogues_per_request": (1, schemas.MAX_DIALOGUES_PER_REQUEST),
            "max_body_bytes": (1024, 1024**3),
            "default_max_new_tokens": (1, self.max_new_tokens_limit),
            "max_new_tokens_limit": (1, schemas.MAX_NEW_TOKENS),
            "max_batch_size": (1, 1024),
            "lookahead": (0, MAX_LOOKAHEAD),
            "draft_memory": (0, MAX_DRAFT_MEMORY),
            "max_queued_dialogues": (1, 1_000_000),
            "max_request_cost": (1, 10**12),
            "max_adapters": (1, 1024),
            "max_connections": (1, 100_000),
        }
        for key, (low, high) in bounds.items():
            value = getattr(self, key)
            if not low <= value <= high:
                raise ConfigError(f"serving.{key} must be between {low} and {high}, got {value}")
        if self.batching not in ("auto", "micro"):
            raise ConfigError(f"serving.batching must be auto or micro, got '{self.batching}'")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"serving.max_wait_ms must be between 0 and 10000, got {self.max_wait_ms}")
        if not 0 < self.body_timeout_s <= 3600:
            raise ConfigError(
                f"serving.body_timeout_s must be above 0 and at most 3600, got {self.body_timeout_s}"
            )
        if self.api_token is not None and len(self.api_token) < 8:
            raise ConfigError("the API token must be at least 8 characters long")
        if self.adapter_root is not None:
            self.adapter_root = Path(self.adapter_root).resolve()

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def uvicorn_options(self) -> dict[str, int]:
        """What ``uvicorn.run`` needs to enforce these limits at the connection level.

        The app answers JSON 503s beyond ``max_connections`` requests in progress;
        uvicorn's own ``limit_concurrency`` (a plain-text 503, counting idle keep-alive
        connections too) is the backstop at twice that.
        """
        return {"limit_concurrency": 2 * self.max_connections}
