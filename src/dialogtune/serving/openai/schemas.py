"""Bodies of the OpenAI-compatible routes (pydantic, hence the OpenAPI schema).

Field names, types and defaults follow OpenAI's API, plus vLLM's ``top_k`` and
``repetition_penalty`` and dialogtune's own ``dialogtune`` object. As OpenAI does, a field
it does not know is refused (400), so a misspelt option never silently falls back to a
default; OpenAI fields that only have a neutral value here (``presence_penalty: 0``,
``logprobs: false``, ...) are accepted with that value and refused otherwise, naming the
field. Every field is bounded, like the rest of the API (``schemas``); the server's own,
tighter limits are checked when the request is decoded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from dialogtune.serving.schemas import (
    ADAPTER_NAME_PATTERN,
    MAX_DIALOGUE_CHARS,
    MAX_DIALOGUES_PER_REQUEST,
    MAX_NEW_TOKENS,
    MAX_PATH_CHARS,
    MAX_PROMPT_TOKENS,
    AdapterInfo,
)

MAX_MESSAGES = 256
MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256

Text = Annotated[str, StringConstraints(max_length=MAX_DIALOGUE_CHARS)]
StopText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
TokenId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(min_length=1, max_length=MAX_MESSAGES)]
    name: Annotated[str, StringConstraints(max_length=64)] | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class DialogtuneOptions(_Strict):
    summarize: bool = Field(
        default=False,
        description="take the last user message as a dialogue and summarize it with the server's "
        "prompt (the adapter's saved training prompt), as POST /v1/summarize does",
    )


class StreamOptions(_Strict):
    include_usage: bool = Field(default=False, description="send a last chunk with the token counts")


class SamplingFields(_Strict):
    """The options both routes share."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)] = Field(
        description="an adapter name, or the base model's id (GET /v1/models lists them)"
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_NEW_TOKENS, description="new tokens at most (server default if absent)"
    )
    temperature: float | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description="0 (below 1e-5) is greedy; default 1 (with dialogtune.summarize: greedy, as /v1/summarize)",
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=1000, description="vLLM's extension; -1 or 0: off")
    repetition_penalty: float | None = Field(default=None, ge=0.5, le=2.0, description="vLLM's extension")
    n: int | None = Field(default=None, ge=1, le=128, description="only 1 is supported")
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOPS)] | None = Field(
        default=None, description="generation stops once the text contains one; it is not returned"
    )
    stream: bool | None = Field(default=False, description="server-sent events, ending with data: [DONE]")
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="sampling seed")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="only 0 is supported")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="only 0 is supported")
    user: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="ignored"
    )

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=MAX_NEW_TOKENS, description="OpenAI's newer name for max_tokens"
    )
    logprobs: bool | None = Field(default=None, description="only false is supported")
    dialogtune: DialogtuneOptions | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "dialogsum",
                    "messages": [{"role": "user", "content": "#Person1#: Lunch?\n#Person2#: Yes, at noon."}],
                    "max_tokens": 60,
                    "temperature": 0,
                    "dialogtune": {"summarize": True},
                }
            ]
        },
    )


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_DIALOGUE_CHARS)]
        | TokenIds
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_DIALOGUE_CHARS)]],
            Field(min_length=1, max_length=MAX_DIALOGUES_PER_REQUEST),
        ]
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_DIALOGUES_PER_REQUEST)]
    ) = Field(description="text, token ids, or a list of either (one choice each)")
    echo: bool | None = Field(default=None, description="only false is supported")
    logprobs: int | None = Field(default=None, ge=0, le=5, description="only null is supported")

    def prompts(self) -> list[str] | list[list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt[0], int):
            return [prompt]  # type: ignore[list-item]
        return prompt  # type: ignore[return-value]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "dialogtune"
    root: str = Field(description="the base model, or the adapter's folder")
    parent: str | None = Field(description="for an adapter: the base model's id")
    max_model_len: int = Field(description="longest prompt accepted, in tokens")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


AdapterName = Annotated[str, StringConstraints(pattern=ADAPTER_NAME_PATTERN)]


class LoadLoraAdapterRequest(_Strict):
    lora_name: AdapterName
    lora_path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        pattern=r"^[^\x00]+$",
        description="adapter directory on the server (safetensors PEFT adapter)",
    )


class UnloadLoraAdapterRequest(_Strict):
    lora_name: AdapterName


class LoraAdapterResponse(BaseModel):
    message: str
    adapter: AdapterInfo | None = Field(default=None, description="the adapter loaded (load only)")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorDetail
