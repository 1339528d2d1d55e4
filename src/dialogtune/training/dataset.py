"""Records → tokenized training examples, through the model kind (prompt, masking, truncation).

Each (dialogue, reference) pair becomes one example: ``{input_ids, attention_mask, labels}``
as :meth:`ModelKind.encode_example` builds it (causal: the prompt is masked with -100 and
only the summary + EOS are learned; seq2seq: the labels are the summary). Padding is left
to the collator, per batch, so no example is padded to a fixed length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dialogtune.data.records import Record
from dialogtune.errors import DataError
from dialogtune.models.kinds import IGNORE_INDEX, truncate_dialogue
from dialogtune.models.loading import LoadedModel
from dialogtune.prompts import PromptTemplate

Example = dict[str, list[int]]


def encode_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    template: PromptTemplate,
    *,
    max_dialogue_tokens: int | None,
    max_target_tokens: int,
) -> list[Example]:
    """One example per reference summary (a multi-reference dialogue gives several)."""
    tok, kind = loaded.tokenizer, loaded.kind
    examples: list[Example] = []
    for record in records:
        if not record.references:
            raise DataError(f"record '{record.id}' has no reference summary: training needs one")
        # The same prompt generation uses, so the model is trained on what it will see.
        prompt = kind.format_prompt(
            tok, truncate_dialogue(tok, record.dialogue, max_dialogue_tokens), template
        )
        for reference in record.references:
            examples.append(kind.encode_example(tok, prompt, reference, max_target_tokens))
    return examples


class ExampleDataset(torch.utils.data.Dataset):
    """A list of tokenized examples (the length-grouped sampler reads their ``input_ids`` lengths)."""

    def __init__(self, examples: list[Example]) -> None:
        if not examples:
            raise DataError("no training examples (check data.train / data.eval selections)")
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def token_counts(examples: Sequence[Example]) -> dict[str, int]:
    """Input tokens and learned (label) tokens: what tokens/s in the metadata counts."""
    return {
        "examples": len(examples),
        "input_tokens": sum(len(e["input_ids"]) for e in examples),
        "label_tokens": sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in examples),
    }
