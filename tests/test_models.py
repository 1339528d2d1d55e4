"""Model specs, kind detection, dtype choice, parameter counts (the notebook's numbers)."""

from __future__ import annotations

import json

import pytest
import torch

from dialogtune.cli import main
from dialogtune.errors import ModelSpecError
from dialogtune.models import CAUSAL, IGNORE_INDEX, SEQ2SEQ, load_model, resolve_spec
from dialogtune.models.loading import choose_dtype
from dialogtune.models.precision import resolve_precision
from dialogtune.prompts import NOTEBOOK_TEMPLATE, PromptTemplate


def test_resolve_spec_forms(tmp_path):
    assert resolve_spec("random:tiny-t5").source == "random"
    assert resolve_spec("google/flan-t5-base").source == "hub"
    (tmp_path / "config.json").write_text("{}")
    assert resolve_spec(str(tmp_path)).source == "dir"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_spec(str(gguf)).source == "gguf"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:nope", "unknown random architecture 'nope'"),
        ("./no/such/dir", "model path not found"),
        ("missing.gguf", "GGUF file not found"),
        ("smollm9", "unknown model 'smollm9'"),
    ],
)
def test_bad_spec_is_one_line_error(spec, message, capsys):
    with pytest.raises(ModelSpecError, match=message):
        resolve_spec(spec)
    assert main(["params", "--model", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_adapter_dir_given_as_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match="is a LoRA adapter"):
        resolve_spec(str(tmp_path))


def test_kind_detection_and_padding_side():
    t5 = load_model("random:tiny-t5")
    llama = load_model("random:tiny-llama")
    assert t5.kind is SEQ2SEQ and t5.tokenizer.padding_side == "right"
    assert llama.kind is CAUSAL and llama.tokenizer.padding_side == "left"
    # precision auto: bf16 on CPUs with native bf16 (this machine kind), fp32 elsewhere
    assert t5.precision == llama.precision == resolve_precision("auto", device="cpu", model_type="t5")


def test_never_fp16_for_t5():
    with pytest.raises(ModelSpecError, match="fp16 overflows"):
        choose_dtype("fp16", torch.device("cpu"), "t5")
    assert choose_dtype("fp32", torch.device("cpu"), "llama") == torch.float32
    assert choose_dtype("bf16", torch.device("cpu"), "t5") == torch.bfloat16


def test_flan_t5_base_params_match_notebook(capsys):
    # The real checkpoint has an untied lm_head: 247,577,856 parameters (notebook's count).
    assert main(["params", "--model", "random:flan-t5-base", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["total"] == 247_577_856 and full["trainable"] == 247_577_856
    assert full["random_weights"] is True
    args = [
        "params",
        "--model",
        "random:flan-t5-base",
        "--method",
        "lora",
        "--lora-r",
        "32",
        "--lora-alpha",
        "32",
        "--target-modules",
        "q,v",
        "--json",
    ]
    assert main(args) == 0
    lora = json.loads(capsys.readouterr().out)
    assert lora["trainable"] == 3_538_944 and lora["total"] == 251_116_800
    assert round(lora["trainable_percent"], 2) == 1.41


def test_params_text_output(capsys):
    assert main(["params", "--model", "random:tiny-llama", "--method", "lora", "--lora-r", "4"]) == 0
    out = capsys.readouterr().out
    assert "trainable model parameters:" in out and "RANDOM WEIGHTS" in out


def test_seq2seq_prompt_is_notebook_template():
    t5 = load_model("random:tiny-t5")
    prompt = t5.kind.format_prompt(t5.tokenizer, "#Person1#: hi", PromptTemplate())
    assert prompt == NOTEBOOK_TEMPLATE.replace("{dialogue}", "#Person1#: hi")


def test_causal_labels_mask_prompt_token_by_token():
    llama = load_model("random:tiny-llama")
    prompt = llama.kind.format_prompt(llama.tokenizer, "#Person1#: hi", PromptTemplate())
    example = llama.kind.encode_example(llama.tokenizer, prompt, "They greet.", max_target_tokens=64)
    prompt_ids = llama.kind.encode_prompts(llama.tokenizer, [prompt])[0]
    n = len(prompt_ids)
    assert example["input_ids"][:n] == prompt_ids
    assert example["labels"][:n] == [IGNORE_INDEX] * n
    summary_ids = llama.tokenizer("They greet.", add_special_tokens=False)["input_ids"]
    assert example["labels"][n:] == [*summary_ids, llama.tokenizer.eos_token_id]
    assert example["input_ids"][n:] == example["labels"][n:]


def test_seq2seq_labels_end_with_eos_when_truncated():
    t5 = load_model("random:tiny-t5")
    example = t5.kind.encode_example(t5.tokenizer, "x", "a long summary text", max_target_tokens=5)
    assert len(example["labels"]) == 5 and example["labels"][-1] == t5.tokenizer.eos_token_id
    assert IGNORE_INDEX not in example["labels"]
