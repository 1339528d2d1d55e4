"""Request and response bodies of the HTTP API (pydantic, hence the OpenAPI schema).

Every field a client controls is bounded here. These are the *hard* ceilings, the
same for every server: a request beyond them is malformed (422). A server may be
configured tighter (``ServingConfig``); a request within the schema but beyond the
server's own limits is answered 413 (too large) or 422 (generation options) with a
message naming the limit, by ``app.decode_request``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

# Hard ceilings. A DialogSum dialogue is ~700 characters on average, ~5,000 at most.
MAX_DIALOGUE_CHARS = 100_000
MAX_DIALOGUES_PER_REQUEST = 256
MAX_NEW_TOKENS = 1024
MAX_PROMPT_TOKENS = 65_536  # a token-id prompt of the OpenAI-compatible routes
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_PATH_CHARS = 4096

Dialogue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DIALOGUE_CHARS)]
DialogueList = Annotated[list[Dialogue], Field(min_length=1, max_length=MAX_DIALOGUES_PER_REQUEST)]
AdapterName = Annotated[str, StringConstraints(pattern=ADAPTER_NAME_PATTERN)]


class _Strict(BaseModel):
    # Unknown fields are an error, not silently ignored: a typo like "max_tokens"
    # would otherwise fall back to the default without the client noticing.
    model_config = ConfigDict(extra="forbid")


class GenerationOptions(_Strict):
    """Decoding options; any option left out takes the server's default."""

    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="summary length cap in tokens (server default if absent)",
    )
    num_beams: int = Field(default=1, ge=1, le=4, description="beam search width; 1 is greedy")
    do_sample: bool = Field(default=False, description="sample instead of greedy/beam search")
    # A temperature near 0 overflows the softmax into inf/NaN; 0.05 is sharp enough.
    temperature: float = Field(default=1.0, ge=0.05, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=50, ge=0, le=1000)
    repetition_penalty: float = Field(default=1.0, ge=0.5, le=2.0)
    no_repeat_ngram_size: int = Field(default=0, ge=0, le=10)
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="sampling seed")


class SummarizeRequest(_Strict):
    """One dialogue (``dialogue``) or several (``dialogues``), for the base model or an adapter."""

    # SkipJsonSchema[None]: null is accepted (same as absent) but not advertised, so the
    # schema's oneOf below says exactly what a valid request looks like.
    dialogue: Dialogue | SkipJsonSchema[None] = Field(default=None, description="a single dialogue")
    dialogues: DialogueList | SkipJsonSchema[None] = Field(
        default=None, description="several dialogues, summarized together"
    )
    adapter: AdapterName | None = Field(
        default=None, description="adapter name; absent or null: the base model"
    )
    options: GenerationOptions | None = None

    @model_validator(mode="after")
    def _exactly_one_input(self) -> SummarizeRequest:
        if (self.dialogue is None) == (self.dialogues is None):
            raise ValueError("give exactly one of 'dialogue' (a string) or 'dialogues' (a list of strings)")
        return self

    def texts(self) -> list[str]:
        return [self.dialogue] if self.dialogue is not None else list(self.dialogues or [])

    model_config = ConfigDict(
        extra="forbid",  # pydantic merges configs, but restating it keeps the rule visible here
        json_schema_extra={
            "oneOf": [{"required": ["dialogue"]}, {"required": ["dialogues"]}],
            "examples": [
                {
                    "dialogue": "#Person1#: Lunch?\n#Person2#: Yes, at noon.",
                    "adapter": None,
                    "options": {"max_new_tokens": 60},
                }
            ],
        },
    )


class SummarizeResponse(BaseModel):
    id: str = Field(description="request id (also in the X-Request-ID header and the request log)")
    model: str
    adapter: str | None
    random_weights: bool = Field(description="true when the base model has random weights (tests only)")
    summary: str | None = Field(description="the summary, when the request sent 'dialogue'")
    summaries: list[str] = Field(description="one summary per dialogue, in request order")
    seconds: float = Field(description="server-side time for this request, queueing included")


class AdapterInfo(BaseModel):
    name: str
    path: str
    base_model: str | None = Field(description="the base the adapter was trained on, if recorded")
    rank: int | None
    alpha: float | None
    target_modules: list[str]
    size_bytes: int = Field(description="size of adapter_model.safetensors")


class AdaptersResponse(BaseModel):
    model: str
    kind: str
    random_weights: bool
    adapters: list[AdapterInfo]


class LoadAdapterRequest(_Strict):
    name: AdapterName
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        pattern=r"^[^\x00]+$",
        description="adapter directory on the server (safetensors PEFT adapter)",
    )


class HealthResponse(BaseModel):
    status: str = Field(
        description="'ok' (HTTP 200); 'error' when the model fails its self-check, 'draining' while "
        "shutting down (both HTTP 503)"
    )
    problem: str | None = Field(default=None, description="what the self-check found wrong, if anything")
    model: str
    random_weights: bool
    adapters: int
    queued_dialogues: int
    open_requests: int = Field(description="requests in progress (max_connections bounds them)")
    batching: str = Field(
        description="'continuous' (decoder-only models: requests join the running batch between decode "
        "steps) or 'micro' (encoder-decoder models: static batches)"
    )
    batches: int = Field(description="decode steps (continuous) or generate calls (micro) so far")
    largest_batch: int = Field(description="most dialogues decoded together so far")
    batched_dialogues: int = Field(description="dialogues summarized so far")
    failed_batches: int = Field(description="generate calls that failed with an internal error")


class ErrorResponse(BaseModel):
    detail: str
