"""Dynamic padding for both model kinds, with padded labels set to -100.

transformers' ``DataCollatorForSeq2Seq`` does what both kinds need: it pads the inputs with
``tokenizer.pad`` (on the tokenizer's padding side, which :mod:`dialogtune.models.kinds`
sets: left for causal, right for seq2seq) and pads ``labels`` with -100 on the same side,
so causal inputs and labels stay aligned token for token. Padding each batch only to its
own longest example (not to ``model_max_length``, as the notebook does) is most of the
training speed-up; padding with -100 (not the pad id) is what makes the loss right.
"""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from dialogtune.models.kinds import IGNORE_INDEX


def make_collator(tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> Any:
    """The collator for training and eval-loss batches.

    ``pad_to_multiple_of`` (e.g. 8) helps tensor cores on GPUs; on CPUs it only adds padding.
    No ``model`` is passed: T5 builds ``decoder_input_ids`` from ``labels`` itself, and a
    PEFT/DDP-wrapped model need not be known here.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token (load models with dialogtune.models.load_model)")
    return DataCollatorForSeq2Seq(
        tokenizer,
        padding=True,
        label_pad_token_id=IGNORE_INDEX,
        pad_to_multiple_of=pad_to_multiple_of,
        return_tensors="pt",
    )
