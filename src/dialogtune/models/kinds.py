"""The one place where seq2seq (T5, BART) and causal (Llama, SmolLM, Qwen) models differ.

Everything else in dialogtune calls these methods and never branches on the model
type: the transformers class that loads the model, PEFT's task type, prompt formatting,
truncation, padding side, label masking, where the loss may skip positions and decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from dialogtune.errors import ConfigError
from dialogtune.prompts import PromptTemplate, render_chat

IGNORE_INDEX = -100  # labels with this value contribute no loss (PyTorch/transformers convention)


class ModelKind(Protocol):
    name: str
    padding_side: str
    peft_task_type: str  # PEFT's TaskType value: how an adapter wraps the model
    appends_eos: bool  # the tokenizer ends every encoded input with EOS (T5's does)
    selective_loss: bool  # logits may be computed only at the learned positions (decoder-only)
    continuous_batching: bool  # the ragged continuous-batching engine can run it (decoder-only)

    def auto_model_class(self) -> Any: ...

    def first_step_inputs(self, config: Any, rows: int, device: Any) -> dict[str, torch.Tensor]: ...

    def format_prompt(
        self, tokenizer: PreTrainedTokenizerBase, dialogue: str, template: PromptTemplate
    ) -> str: ...

    def encode_prompts(self, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]: ...

    def generated_part(self, output: torch.Tensor, input_length: int) -> torch.Tensor: ...

    def decode_generated(
        self, tokenizer: PreTrainedTokenizerBase, output: torch.Tensor, input_length: int
    ) -> list[str]: ...

    def encode_example(
        self, tokenizer: PreTrainedTokenizerBase, prompt: str, summary: str, max_target_tokens: int
    ) -> dict[str, list[int]]: ...


# encode_prefix's first cut assumes at most this many characters per token (English BPE
# averages ~4) and doubles while the cut text holds too few tokens, so any token length works
# and the work stays proportional to the tokens wanted, not to the length of the text.
CHARS_PER_TOKEN = 8
# Tokens the cut text must hold beyond those wanted: the cut may change how the word it
# falls in is tokenized (a few tokens), never the tokens before that word.
SLACK_TOKENS = 16


def encode_prefix(
    tokenizer: PreTrainedTokenizerBase, text: str, n_tokens: int, *, target: bool = False, **kwargs: Any
) -> list[int]:
    """``tokenizer(text, **kwargs)["input_ids"][:n_tokens]``, tokenizing only a prefix of ``text``.

    Tokenizing a 10 MB dialogue whole takes ~2.3 GB and seconds; here a prefix of about
    ``(n_tokens + SLACK_TOKENS) * CHARS_PER_TOKEN`` characters is tokenized (cut before a space
    where there is one), grown only while it yields fewer than ``n_tokens + SLACK_TOKENS`` tokens.
    ``target``: encode as a target text (``tokenizer(text_target=...)``).
    """

    def encode(part: str) -> list[int]:
        return (tokenizer(text_target=part, **kwargs) if target else tokenizer(part, **kwargs))["input_ids"]

    budget = (n_tokens + SLACK_TOKENS) * CHARS_PER_TOKEN
    while budget < len(text):
        space = max(text.rfind(" ", budget // 2, budget), text.rfind("\n", budget // 2, budget))
        ids = encode(text[: space if space > 0 else budget])
        if len(ids) >= n_tokens + SLACK_TOKENS:
            return ids[:n_tokens]
        budget *= 2
    return encode(text)[:n_tokens]


def truncate_dialogue(tokenizer: PreTrainedTokenizerBase, dialogue: str, max_tokens: int | None) -> str:
    """Cut the dialogue (never the instruction) to ``max_tokens`` tokens.

    Truncating the whole prompt would cut off "Summary:" for long dialogues, and the
    model would no longer know what to do. Only a prefix is tokenized (:func:`encode_prefix`),
    so a huge dialogue costs what a long one does.
    """
    if not max_tokens:
        return dialogue
    ids = encode_prefix(tokenizer, dialogue, max_tokens + 1, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return dialogue
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def _leading_special_token(tokenizer: PreTrainedTokenizerBase) -> int | None:
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[1 : 1 + len(without)] == without:
        return with_special[0]
    return None


@dataclass(frozen=True)
class Seq2SeqKind:
    name: str = "seq2seq"
    # Encoder inputs can be padded on either side; right is what T5/BART were trained with.
    padding_side: str = "right"
    peft_task_type: str = "SEQ_2_SEQ_LM"
    appends_eos: bool = True
    # The decoder runs on the summary tokens only: there are no prompt positions to skip.
    selective_loss: bool = False
    # The engine keeps one growing sequence per row; an encoder-decoder has two.
    continuous_batching: bool = False

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def first_step_inputs(self, config: Any, rows: int, device: Any) -> dict[str, torch.Tensor]:
        """What one forward pass needs besides the prompt to predict the first summary token:
        the decoder's start token."""
        start = torch.full((rows, 1), int(config.decoder_start_token_id), device=device)
        return {"decoder_input_ids": start}

    def format_prompt(
        self, tokenizer: PreTrainedTokenizerBase, dialogue: str, template: PromptTemplate
    ) -> str:
        if template.chat == "always":
            raise ConfigError("prompt.chat=always is only for causal chat models")
        return template.fill(dialogue)

    def encode_prompts(self, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
        return tokenizer(prompts, add_special_tokens=True)["input_ids"]

    def generated_part(self, output: torch.Tensor, input_length: int) -> torch.Tensor:
        # The decoder output holds only the summary, after the decoder start token.
        return output[:, 1:]

    def decode_generated(
        self, tokenizer: PreTrainedTokenizerBase, output: torch.Tensor, input_length: int
    ) -> list[str]:
        part = self.generated_part(output, input_length)
        return [text.strip() for text in tokenizer.batch_decode(part, skip_special_tokens=True)]

    def encode_example(
        self, tokenizer: PreTrainedTokenizerBase, prompt: str, summary: str, max_target_tokens: int
    ) -> dict[str, list[int]]:
        input_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        labels = encode_prefix(tokenizer, summary, max_target_tokens, target=True, add_special_tokens=True)
        if tokenizer.eos_token_id is not None and labels and labels[-1] != tokenizer.eos_token_id:
            labels[-1] = tokenizer.eos_token_id  # keep the end token when truncating
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


@dataclass(frozen=True)
class CausalKind:
    name: str = "causal"
    # Left padding so every row's last prompt token sits at the same position when
    # generation starts; right padding would make the model continue after pads.
    padding_side: str = "left"
    peft_task_type: str = "CAUSAL_LM"
    appends_eos: bool = False
    # Prompt and summary share one sequence; only summary positions need logits.
    selective_loss: bool = True
    continuous_batching: bool = True

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def first_step_inputs(self, config: Any, rows: int, device: Any) -> dict[str, torch.Tensor]:
        return {}  # the prompt's last position predicts the first summary token

    def _use_chat(self, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate) -> bool:
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template.chat == "always" and not has_chat:
            raise ConfigError("prompt.chat=always but this tokenizer has no chat template")
        return has_chat and template.chat != "never"

    def format_prompt(
        self, tokenizer: PreTrainedTokenizerBase, dialogue: str, template: PromptTemplate
    ) -> str:
        text = template.fill(dialogue)
        if not self._use_chat(tokenizer, template):
            return text
        return render_chat(
            tokenizer, text.strip(), template.system, keep_default_system=template.keep_default_system
        )

    def encode_prompts(self, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
        # Chat templates already contain their special tokens. Plain prompts get the
        # leading token (BOS) that the tokenizer itself adds, if any, but never a
        # trailing EOS: the model would read the prompt as finished.
        encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        bos = _leading_special_token(tokenizer)
        if bos is None:
            return encoded
        bos_text = tokenizer.convert_ids_to_tokens(bos)
        return [ids if prompt.startswith(bos_text) else [bos, *ids] for prompt, ids in zip(prompts, encoded)]

    def generated_part(self, output: torch.Tensor, input_length: int) -> torch.Tensor:
        # generate() returns prompt + continuation for decoder-only models.
        return output[:, input_length:]

    def decode_generated(
        self, tokenizer: PreTrainedTokenizerBase, output: torch.Tensor, input_length: int
    ) -> list[str]:
        part = self.generated_part(output, input_length)
        return [text.strip() for text in tokenizer.batch_decode(part, skip_special_tokens=True)]

    def encode_example(
        self, tokenizer: PreTrainedTokenizerBase, prompt: str, summary: str, max_target_tokens: int
    ) -> dict[str, list[int]]:
        prompt_ids = self.encode_prompts(tokenizer, [prompt])[0]
        target_ids = encode_prefix(
            tokenizer, summary.strip(), max_target_tokens - 1, add_special_tokens=False
        )
        # The model must learn to stop: end the target with EOS (for chat models the
        # end-of-turn token, which is what their tokenizer calls eos).
        target_ids = [*target_ids, tokenizer.eos_token_id]
        input_ids = prompt_ids + target_ids
        # Only summary tokens are learned; the prompt is context (train_on_input=False).
        labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


SEQ2SEQ = Seq2SeqKind()
CAUSAL = CausalKind()


def kind_for_config(config: PretrainedConfig | Any) -> ModelKind:
    """Detect seq2seq vs causal from a transformers config."""
    return SEQ2SEQ if getattr(config, "is_encoder_decoder", False) else CAUSAL
