"""Tokenized examples, label masking token by token, dynamic padding, and the selective loss."""

from __future__ import annotations

import pytest
import torch

from dialogtune.data.records import Record
from dialogtune.methods.lora import METHOD as LORA
from dialogtune.methods.lora import LoraSettings
from dialogtune.models.kinds import IGNORE_INDEX
from dialogtune.models.loading import load_model
from dialogtune.prompts import PromptTemplate
from dialogtune.training.collator import make_collator
from dialogtune.training.dataset import encode_records, token_counts
from dialogtune.training.loss import selective_causal_loss, supports_selective_loss

RECORDS = [
    Record("a", "#Person1#: Hi!\n#Person2#: Hello.", ("They greet.",)),
    Record(
        "b",
        "#Person1#: Is the shop open on Sunday?\n#Person2#: No, it is closed.",
        ("The shop is closed.", "#Person2# says no."),
    ),
]
TEMPLATE = PromptTemplate()


@pytest.fixture(scope="module")
def llama():
    torch.set_num_threads(1)
    return load_model("random:tiny-llama")


@pytest.fixture(scope="module")
def t5():
    return load_model("random:tiny-t5")


def byte_ids(text: str) -> list[int]:
    """The byte tokenizer's ids: 3 specials, then the 256 byte symbols in sorted order."""
    tok = load_model("random:tiny-llama").tokenizer
    return tok(text, add_special_tokens=False)["input_ids"]


def test_causal_labels_mask_the_prompt_token_by_token(llama) -> None:
    examples = encode_records(llama, RECORDS, TEMPLATE, max_dialogue_tokens=None, max_target_tokens=64)
    assert len(examples) == 3  # one example per reference
    eos = llama.tokenizer.eos_token_id
    for example, (record, reference) in zip(
        examples,
        [
            (RECORDS[0], "They greet."),
            (RECORDS[1], "The shop is closed."),
            (RECORDS[1], "#Person2# says no."),
        ],
    ):
        prompt = byte_ids(TEMPLATE.fill(record.dialogue))
        target = [*byte_ids(reference), eos]
        assert example["input_ids"] == prompt + target
        assert example["attention_mask"] == [1] * len(prompt + target)
        # Every prompt position is masked; every summary position (and EOS) is learned as itself.
        assert example["labels"] == [IGNORE_INDEX] * len(prompt) + target


def test_seq2seq_labels_are_the_summary(t5) -> None:
    (example, *_) = encode_records(t5, RECORDS, TEMPLATE, max_dialogue_tokens=None, max_target_tokens=64)
    eos = t5.tokenizer.eos_token_id
    assert example["input_ids"] == [*byte_ids(TEMPLATE.fill(RECORDS[0].dialogue)), eos]
    assert example["labels"] == [*byte_ids("They greet."), eos]


def test_truncation_keeps_instruction_and_end_token(llama) -> None:
    (example, *_) = encode_records(llama, RECORDS[1:], TEMPLATE, max_dialogue_tokens=10, max_target_tokens=5)
    learned = [t for t in example["labels"] if t != IGNORE_INDEX]
    assert learned == [*byte_ids("The ")[:4], llama.tokenizer.eos_token_id]
    assert example["input_ids"][: -len(learned)] == byte_ids(TEMPLATE.fill(RECORDS[1].dialogue[:10]))


@pytest.mark.parametrize("which", ["llama", "t5"])
def test_collator_pads_dynamically_on_the_kind_side_with_ignored_labels(which, request) -> None:
    loaded = request.getfixturevalue(which)
    examples = encode_records(loaded, RECORDS, TEMPLATE, max_dialogue_tokens=None, max_target_tokens=64)
    batch = make_collator(loaded.tokenizer)(examples)
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (3, longest)  # the batch's longest, not model_max_length
    pad = loaded.tokenizer.pad_token_id
    for row, example in enumerate(examples):
        n, m = len(example["input_ids"]), len(example["labels"])
        ids, mask, labels = (batch[k][row].tolist() for k in ("input_ids", "attention_mask", "labels"))
        if loaded.kind.padding_side == "left":  # causal: padding in front, inputs and labels stay aligned
            assert ids == [pad] * (longest - n) + example["input_ids"]
            assert mask == [0] * (longest - n) + [1] * n
            assert labels == [IGNORE_INDEX] * (longest - n) + example["labels"]
        else:
            assert ids == example["input_ids"] + [pad] * (longest - n)
            assert mask == [1] * n + [0] * (longest - n)
            width = batch["labels"].shape[1]
            assert labels == example["labels"] + [IGNORE_INDEX] * (width - m)


def test_token_counts(llama) -> None:
    examples = encode_records(llama, RECORDS, TEMPLATE, max_dialogue_tokens=None, max_target_tokens=64)
    counts = token_counts(examples)
    assert counts["examples"] == 3
    assert counts["label_tokens"] == sum(
        len(byte_ids(r)) + 1 for r in ("They greet.", "The shop is closed.", "#Person2# says no.")
    )


def _batch(loaded):
    examples = encode_records(loaded, RECORDS, TEMPLATE, max_dialogue_tokens=None, max_target_tokens=64)
    return make_collator(loaded.tokenizer)(examples)


@pytest.mark.parametrize("lora", [False, True])
def test_selective_loss_equals_the_models_own_loss_and_gradients(lora) -> None:
    torch.manual_seed(0)
    model = load_model("random:tiny-llama").model
    if lora:
        model = LORA.apply(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    model.train()
    batch = _batch(load_model("random:tiny-llama"))
    assert supports_selective_loss(model)

    reference = model(**batch).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    loss = selective_causal_loss(model, batch)
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)

    # Token-weighted accumulation: the sum over label tokens divided by the Trainer's count.
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    summed = selective_causal_loss(model, batch, num_items_in_batch=2 * n)
    torch.testing.assert_close(summed, reference.detach() / 2, rtol=1e-6, atol=1e-6)


def test_selective_loss_only_computes_logits_where_labels_are(llama) -> None:
    batch = _batch(llama)
    seen = {}

    def record(_module, inputs, _output) -> None:
        seen["positions"] = inputs[0].shape[1]

    handle = llama.model.get_output_embeddings().register_forward_hook(record)
    try:
        selective_causal_loss(llama.model, batch)
    finally:
        handle.remove()
    longest_target = max(int((row != IGNORE_INDEX).sum()) for row in batch["labels"])
    # Left padding puts every summary at the end: one block as long as the longest summary.
    assert seen["positions"] == longest_target < batch["input_ids"].shape[1] // 3


def test_seq2seq_models_keep_their_own_loss(t5) -> None:
    assert not supports_selective_loss(t5.model)
