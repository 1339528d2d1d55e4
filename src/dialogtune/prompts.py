"""Instruction templates, and how a chat model's template wraps them.

The seq2seq default is the notebook's prompt. Instruct/chat causal models get the same
instruction wrapped in their own chat template (so an instruct model sees the format it was
tuned on); base causal models get the plain text.

The system prompt is an explicit, recorded part of the prompt. Many chat templates insert a
default one when a conversation has none — SmolLM2's says "You are a helpful AI assistant
named SmolLM, trained by Hugging Face" — which costs prefill on every dialogue and invites
the model to name "SmolLM" as one of the people talking. By default dialogtune sends no
system message and removes such a default (``keep_default_system`` keeps it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dialogtune.errors import ConfigError
from dialogtune.io import find_lone_surrogate

NOTEBOOK_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "
_SENTINEL = "\u2063DIALOGTUNE-SYSTEM\u2063"  # invisible separators: never in a real prompt


@dataclass(frozen=True)
class PromptTemplate:
    """How a dialogue becomes a model input.

    Attributes:
        template: text with exactly one ``{dialogue}`` placeholder.
        chat: ``"auto"`` uses the tokenizer's chat template when it has one (causal
            models only), ``"always"`` requires one, ``"never"`` uses plain text.
        system: the system message for chat templates; ``None``: no system message.
        keep_default_system: with ``system`` None, keep the default system message some chat
            templates insert on their own (SmolLM2, Qwen2.5, Llama 3.1); off by default.
    """

    template: str = field(
        default=NOTEBOOK_TEMPLATE, metadata={"help": "prompt text with one {dialogue} placeholder"}
    )
    chat: str = field(default="auto", metadata={"help": "chat template: auto, always or never"})
    system: str | None = field(default=None, metadata={"help": "system message for chat models; null: none"})
    keep_default_system: bool = field(
        default=False,
        metadata={"help": "keep the default system message a chat template inserts when none is given"},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or self.template.count("{dialogue}") != 1:
            raise ConfigError("prompt.template must contain exactly one '{dialogue}' placeholder")
        if self.chat not in ("auto", "always", "never"):
            raise ConfigError(f"prompt.chat must be auto, always or never, got '{self.chat}'")
        if self.system is not None and self.keep_default_system:
            raise ConfigError("prompt.keep_default_system only applies when prompt.system is null")
        for key in ("template", "system"):
            # A flag with bytes that are not UTF-8 arrives as lone surrogates (Python's
            # surrogateescape), which no tokenizer accepts: say so now, not at generation.
            if find_lone_surrogate(getattr(self, key)) is not None:
                raise ConfigError(f"prompt.{key} is not valid Unicode text (it holds a lone surrogate)")

    def fill(self, dialogue: str) -> str:
        # str.replace, not str.format: dialogues contain braces often enough.
        return self.template.replace("{dialogue}", dialogue)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptTemplate:
        known = {k: values[k] for k in ("template", "chat", "system", "keep_default_system") if k in values}
        return cls(**known)


def render_chat(tokenizer: Any, user: str, system: str | None, *, keep_default_system: bool = False) -> str:
    """``user`` (and ``system``) through the tokenizer's chat template, ready for generation."""
    if system is not None:
        try:
            return _apply(
                tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}]
            )
        except ConfigError:
            raise
        except Exception as exc:  # e.g. Gemma's template raises for a system role
            raise ConfigError(
                f"this chat template does not take a system message ({str(exc)[:120]}); "
                "set prompt.system to null and put the instruction in prompt.template"
            ) from None
    rendered = _apply(tokenizer, [{"role": "user", "content": user}])
    if keep_default_system:
        return rendered
    return _without_default_system(tokenizer, rendered, user)


def _apply(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _without_default_system(tokenizer: Any, rendered: str, user: str) -> str:
    """``rendered`` minus the system turn the template inserted on its own, if it did.

    Rendering the same conversation with a sentinel system message shows where the system
    content goes (``head`` + content + ``tail``). If the template inserted a default, ``rendered``
    is ``head`` + default + ``tail``. The turn opener is the end of ``head`` before the role name
    (``<|im_start|>``, ``<|start_header_id|>``); what comes before it (a BOS) is kept, the system
    turn up to the user turn's opener in ``tail`` is dropped.
    """
    try:
        with_system = _apply(
            tokenizer, [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": user}]
        )
    except Exception:  # no system role in this template: it inserted none either
        return rendered
    cut = with_system.find(_SENTINEL)
    head, tail = with_system[:cut], with_system[cut + len(_SENTINEL) :]
    if (
        cut < 0
        or not (rendered.startswith(head) and rendered.endswith(tail))
        or len(rendered) == len(head + tail)
    ):
        return rendered  # no default system message was inserted
    role = head.rfind("system")
    opener_area = head[:role] if role >= 0 else ""
    for start in range(len(opener_area)):
        opener = opener_area[start:]
        at = tail.find(opener)
        if at >= 0:
            stripped = opener_area[:start] + tail[at:]
            if user in stripped and rendered.endswith(tail[at:]):
                return stripped
            break
    raise ConfigError(
        "cannot remove the default system message this chat template inserts; set prompt.system "
        "explicitly or prompt.keep_default_system: true"
    )
