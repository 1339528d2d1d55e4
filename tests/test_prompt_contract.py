"""The system prompt is explicit, and an adapter is prompted the way it was trained by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training import tiny_overrides

from dialogtune.cli import main
from dialogtune.generation import GenerationSettings, generate
from dialogtune.models.contract import CONTRACT_FILE, read_contract
from dialogtune.models.kinds import CAUSAL
from dialogtune.models.loading import load_model
from dialogtune.models.random_configs import byte_tokenizer
from dialogtune.prompts import PromptTemplate, render_chat
from dialogtune.training import load_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2's chat template: it inserts DEFAULT when the conversation has no system message.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT + "<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama 3.1's: always a system header, with dates, even when none is given.
LLAMA3 = (
    "{{ bos_token }}{% set sys = 'Cutting Knowledge Date: December 2023' %}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% endif %}<|start_header_id|>system<|end_header_id|>\n\n{{ sys }}<|eot_id|>{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN3 = (  # no default system message at all
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_with(template: str):
    tokenizer = byte_tokenizer(append_eos=False)
    tokenizer.chat_template = template
    return tokenizer


def test_no_system_prompt_by_default_and_the_templates_default_is_removed():
    tokenizer = tokenizer_with(SMOLLM2)
    prompt = CAUSAL.format_prompt(tokenizer, "#Person1#: Hi.", PromptTemplate())
    assert DEFAULT not in prompt and "system" not in prompt
    assert (
        prompt
        == "<|im_start|>user\nSummarize the following conversation.\n\n#Person1#: Hi.\n\nSummary:<|im_end|>\n<|im_start|>assistant\n"
    )
    kept = CAUSAL.format_prompt(tokenizer, "#Person1#: Hi.", PromptTemplate(keep_default_system=True))
    assert kept.count(DEFAULT) == 1


@pytest.mark.parametrize("template", [SMOLLM2, LLAMA3, QWEN3])
def test_an_explicit_system_prompt_appears_exactly_once(template):
    tokenizer = tokenizer_with(template)
    system = "You write one-sentence summaries."
    prompt = CAUSAL.format_prompt(tokenizer, "#Person1#: Hi.", PromptTemplate(system=system))
    assert prompt.count(system) == 1 and DEFAULT not in prompt and "Cutting Knowledge" not in prompt
    bare = render_chat(tokenizer, "hello", None)
    assert "hello" in bare and DEFAULT not in bare and "Cutting Knowledge" not in bare
    if template == LLAMA3:  # the BOS token before the (removed) system turn stays
        assert bare.startswith(tokenizer.bos_token or "") and bare.count("<|start_header_id|>") == 2


def test_the_embedded_models_default_system_prompt_is_removed():
    """SmolLM2's real template (the embedded model's tokenizer)."""
    from dialogtune.models.loading import load_tokenizer

    try:
        tokenizer = load_tokenizer("smollm2-135m-instruct")
    except Exception as exc:  # pragma: no cover - the embedded model is a test dependency
        pytest.skip(f"embedded model unavailable: {exc}")
    prompt = CAUSAL.format_prompt(tokenizer, "#Person1#: Hi.", PromptTemplate())
    assert "SmolLM" not in prompt and prompt.startswith("<|im_start|>user\n")
    assert "SmolLM" in CAUSAL.format_prompt(
        tokenizer, "#Person1#: Hi.", PromptTemplate(keep_default_system=True)
    )


def _data(folder: Path) -> Path:
    rows = [
        {
            "id": f"v{i}",
            "dialogue": f"#Person1#: Shall we meet at {i}?\n#Person2#: Yes, at {i}.",
            "summary": f"They meet at {i}.",
        }
        for i in range(3)
    ]
    path = folder / "validation.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_adapter_is_prompted_as_it_was_trained_unless_a_flag_says_otherwise(tmp_path, capsys):
    trained_prompt = PromptTemplate(template="Dialogue:\n{dialogue}\nShort summary:", system="Be brief.")
    config = load_config(
        None,
        tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=2", "data.max_dialogue_tokens=80"),
    )
    config.prompt = trained_prompt
    adapter = train(config, progress=False).run_dir / "adapter"
    contract = read_contract(adapter)
    assert (adapter / CONTRACT_FILE).is_file() and contract.prompt == trained_prompt
    assert contract.max_dialogue_tokens == 80 and contract.method == "lora"

    data = _data(tmp_path / "eval")
    base = [
        "generate",
        "--model",
        config.model,
        "--adapter",
        str(adapter),
        "--data",
        str(data),
        "--precision",
        "fp32",
    ]
    assert main([*base, "--output", str(tmp_path / "default.jsonl")]) == 0
    assert (
        main([*base, "--output", str(tmp_path / "flag.jsonl"), "--prompt-template", "Summarize: {dialogue}"])
        == 0
    )
    capsys.readouterr()
    by_default = [json.loads(x)["prediction"] for x in (tmp_path / "default.jsonl").read_text().splitlines()]
    by_flag = [json.loads(x)["prediction"] for x in (tmp_path / "flag.jsonl").read_text().splitlines()]

    loaded = load_model(config.model, adapter=str(adapter), dtype="fp32")
    dialogues = [json.loads(x)["dialogue"] for x in data.read_text().splitlines()]
    settings = GenerationSettings(max_new_tokens=contract.max_target_tokens, max_dialogue_tokens=80)
    assert by_default == generate(loaded, dialogues, settings, trained_prompt).texts
    flagged = PromptTemplate(
        template="Summarize: {dialogue}", system="Be brief."
    )  # the flag replaces one part
    assert by_flag == generate(loaded, dialogues, settings, flagged).texts
    assert by_flag != by_default


def test_training_records_the_prompt_for_legacy_adapters_too(tmp_path):
    """An adapter from before contracts: its run's config.yaml says how it was prompted."""
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "model: m\nmethod: lora\nprompt: {template: 'S: {dialogue}', chat: auto, system: null}\n"
        "data: {max_dialogue_tokens: 320, max_target_tokens: 96}\n"
    )
    contract = read_contract(run / "adapter")
    assert contract.source == "legacy" and contract.prompt.template == "S: {dialogue}"
    assert contract.prompt.keep_default_system  # what a null system meant before contracts
    assert contract.max_dialogue_tokens == 320 and contract.max_target_tokens == 96
