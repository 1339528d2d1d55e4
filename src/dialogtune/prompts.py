"""Instruction templates.

The seq2seq default is the notebook's prompt. Instruct/chat causal models get the
same instruction wrapped in their own chat template (so an instruct model sees the
format it was tuned on); base causal models get the plain text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dialogtune.errors import ConfigError
from dialogtune.io import find_lone_surrogate

NOTEBOOK_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


@dataclass(frozen=True)
class PromptTemplate:
    """How a dialogue becomes a model input.

    Attributes:
        template: text with exactly one ``{dialogue}`` placeholder.
        chat: ``"auto"`` uses the tokenizer's chat template when it has one (causal
            models only), ``"always"`` requires one, ``"never"`` uses plain text.
        system: system message for chat templates; ``None`` keeps the template's default.
    """

    template: str = NOTEBOOK_TEMPLATE
    chat: str = "auto"
    system: str | None = None

    def __post_init__(self) -> None:
        if self.template.count("{dialogue}") != 1:
            raise ConfigError("prompt.template must contain exactly one '{dialogue}' placeholder")
        if self.chat not in ("auto", "always", "never"):
            raise ConfigError(f"prompt.chat must be auto, always or never, got '{self.chat}'")
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
