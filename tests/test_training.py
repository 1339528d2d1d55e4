"""Training end to end on tiny models: {tiny-t5, tiny-llama} x every method
(full, LoRA, DoRA, IA3, prompt tuning).

Each run trains a few steps on a small fixed dataset built here and checks: the loss goes
down, the run directory holds exactly the expected files, the trainable parameters are what
PEFT itself counts, an adapter is much smaller than the full model, and reloading the saved
weights (frozen, and merged where the method allows) gives identical outputs.

The helpers at the top (``write_dialogues``, ``tiny_overrides``) are shared with the other
``test_training_*`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dialogtune.errors import ConfigError, ModelSpecError
from dialogtune.generation import GenerationSettings, generate
from dialogtune.methods import count_trainable, get_method
from dialogtune.methods.lora import METHOD as LORA
from dialogtune.methods.lora import LoraSettings
from dialogtune.models.loading import load_model
from dialogtune.models.params import count_parameters
from dialogtune.models.random_configs import build_config
from dialogtune.training import load_config, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Per method, a rate that moves a tiny model in 8 steps (vectors and virtual tokens need more).
LEARNING_RATES = {"full": 1e-2, "lora": 3e-2, "dora": 3e-2, "ia3": 0.3, "prompt_tuning": 0.3}
METHODS = ["full", "lora", "dora", "ia3", "prompt_tuning"]
NAMES = ["Tom", "Anna", "Mr. Smith", "Lucy", "Bob", "Mia", "Dr. Lee", "Sam"]
THINGS = ["pizza", "a cake", "some juice", "the music", "flowers", "a game", "bread", "tea"]


def write_dialogues(folder: Path, n_train: int = 8, n_eval: int = 4) -> Path:
    """A DialogSum-shaped directory (train/validation JSONL) of short, fixed dialogues."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", n_train, 0), ("validation", n_eval, 3)):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for i in range(count):
                name, thing = NAMES[(i + offset) % 8], THINGS[(i * 3 + offset) % 8]
                dialogue = (
                    f"#Person1#: Hi {name}, are you coming tonight?\n#Person2#: Yes, I will bring {thing}."
                )
                summary = f"#Person2# will bring {thing}."
                handle.write(
                    json.dumps({"id": f"{split}_{i}", "dialogue": dialogue, "summary": summary}) + "\n"
                )
    return folder


def tiny_model(folder: Path, name: str) -> str:
    """The model spec for ``name``. ``tiny-t5`` is rebuilt from its config with T5's standard
    init: the built-in one uses a 10x init (varied random generations), which makes its
    logits so large (loss ~1700) that a few steps cannot show learning."""
    if name != "tiny-t5":
        return f"random:{name}"
    config = build_config("tiny-t5")
    config.initializer_factor = 1.0
    config.save_pretrained(folder / "tiny-t5")
    return f"random:{folder / 'tiny-t5' / 'config.json'}"


def tiny_overrides(tmp_path: Path, model: str, method: str, *extra: str) -> list[str]:
    """``--set`` overrides for a fast, deterministic tiny run (eval off unless ``extra`` turns it on)."""
    data = write_dialogues(tmp_path / "data")
    return [
        f"model={tiny_model(tmp_path, model)}",
        f"method={method}",
        f"output_dir={tmp_path / 'run'}",
        f"data.source={data}",
        "data.eval.limit=4",
        "data.max_dialogue_tokens=96",
        "data.max_target_tokens=32",
        "training.batch_size=8",
        "training.max_steps=8",
        "training.logging_steps=1",
        "training.precision=fp32",
        f"training.learning_rate={LEARNING_RATES.get(method, 3e-2)}",
        "eval.strategy=no",
        "lora.r=4",
        "lora.alpha=8",
        "lora.dropout=0.0",
        "dora.r=4",
        "dora.alpha=8",
        "dora.dropout=0.0",
        "prompt_tuning.num_virtual_tokens=8",
        *extra,
    ]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def logged_losses(run_dir: Path) -> list[float]:
    history = json.loads((run_dir / "logs" / "history.json").read_text())
    return [row["loss"] for row in history if "loss" in row]


def loss_curves(
    tmp_path: Path,
    model: str,
    method: str,
    key: str,
    values: tuple[str, ...],
    *extra: str,
    after: Callable[[str, Any], None] | None = None,
) -> dict[str, list[float]]:
    """One tiny run per value of the config ``key`` (``extra``: more overrides); each run's
    logged loss curve, by value. ``after(value, result)`` checks each run as it ends."""
    curves = {}
    for value in values:
        config = load_config(None, tiny_overrides(tmp_path / value, model, method, *extra, f"{key}={value}"))
        result = train(config, progress=False)
        if after is not None:
            after(value, result)
        curves[value] = logged_losses(result.run_dir)
    return curves


def compiled_and_eager_curves(
    tmp_path: Path, *extra: str, after: Callable[[str, Any], None] | None = None
) -> dict[str, list[float]]:
    """Loss curves of tiny Llama + LoRA runs with ``training.compile`` false and true."""
    return loss_curves(
        tmp_path, "tiny-llama", "lora", "training.compile", ("false", "true"), *extra, after=after
    )


DIALOGUES = [
    "#Person1#: Hi Bob, are you coming tonight?\n#Person2#: Yes, I will bring tea.",
    "#Person1#: Where is the cake?\n#Person2#: Anna has it.",
]
ADAPTER_FILES = {
    "adapter_config.json",
    "dialogtune_inference.json",
    "adapter_model.safetensors",
    "dialogtune_base.json",
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
}
MODEL_FILES = {
    "config.json",
    "dialogtune_inference.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


def peft_count(model_spec: str, method: str) -> int:
    """Trainable parameters PEFT itself counts for the test's settings of ``method`` on a fresh base,
    with the config built here from PEFT's classes (not dialogtune's)."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model

    base = load_model(model_spec).model
    task = "SEQ_2_SEQ_LM" if base.config.is_encoder_decoder else "CAUSAL_LM"
    llama = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    targets = ["q", "v"] if base.config.is_encoder_decoder else llama  # dialogtune's family defaults
    config = {
        "lora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type=task),
        "dora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True, task_type=task),
        "ia3": lambda: IA3Config(task_type=task),  # PEFT's own per-family modules
        "prompt_tuning": lambda: PromptTuningConfig(num_virtual_tokens=8, task_type=task),
    }[method]()
    trainable, _ = get_peft_model(base, config).get_nb_trainable_parameters()
    return trainable


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("method", METHODS)
def test_train_matrix(tmp_path: Path, model: str, method: str) -> None:
    # Evaluate on the training examples before and after (eval mode: no dropout noise).
    config = load_config(
        None,
        tiny_overrides(
            tmp_path,
            model,
            method,
            "data.eval.split=train",
            "eval.strategy=steps",
            "eval.steps=8",
            "eval.on_start=true",
        ),
    )
    chosen = get_method(method)
    result = train(config, progress=False)
    run = result.run_dir
    history = json.loads((run / "logs" / "history.json").read_text())
    before, after = [row["eval_loss"] for row in history if "eval_loss" in row]
    # Virtual tokens move a model slowest: 8 steps take a few percent off (tiny-t5: 18.9 -> 17.7).
    assert after < (0.97 if method == "prompt_tuning" else 0.8) * before, (before, after)
    assert len(logged_losses(run)) == 8

    weights = chosen.weights_folder
    assert weights == ("model" if method == "full" else "adapter")
    expected = {".dialogtune-output.json", "config.yaml", "metadata.json", "logs/history.json"} | {
        f"{weights}/{f}" for f in (MODEL_FILES if method == "full" else ADAPTER_FILES)
    }
    written = files_under(run)
    events = {f for f in written if f.startswith("logs/events.out.tfevents")}
    assert len(events) == 1 and written - events == expected

    meta = json.loads((run / "metadata.json").read_text())
    assert meta["method"] == method and meta["precision"] == "fp32" and meta["model"]["random_weights"]
    # Prompt tuning prepends virtual tokens, which moves the positions the selective loss picks.
    selective = model == "tiny-llama" and method != "prompt_tuning"
    assert meta["loss"] == ("selective" if selective else "model")
    assert meta["train"]["global_step"] == 8 and meta["train"]["tokens_per_s"] > 0
    assert meta["data_fingerprint"]["train"] and meta["versions"]["transformers"]
    full_count = count_parameters(load_model(config.model).model)["total"]
    if method == "full":
        assert meta["parameters"]["trainable"] == full_count
    else:  # what PEFT itself counts for the same settings on a fresh base
        assert meta["parameters"]["trainable"] == peft_count(config.model, method)
        assert 0 < meta["parameters"]["trainable"] < 0.5 * full_count
    saved = json.loads((run / weights / "dialogtune_inference.json").read_text())
    assert saved["method"] == method and saved["base_model"] == config.model

    # Reload from disk: frozen (0 trainable), same logits and same generations.
    settings = GenerationSettings(max_new_tokens=12, max_dialogue_tokens=96)
    trained = generate(result.loaded, DIALOGUES, settings, config.prompt).texts
    reloaded = chosen.load(config.model, run / weights, precision="fp32", merge="no")
    # A reloaded adapter is frozen; a reloaded full model is a plain model (everything trainable).
    assert count_trainable(reloaded.model)["trainable"] == (full_count if method == "full" else 0)
    assert generate(reloaded, DIALOGUES, settings, config.prompt).texts == trained
    batch = reloaded.tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    if result.loaded.kind.name == "seq2seq":
        batch["decoder_input_ids"] = torch.zeros((2, 3), dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(result.loaded.model(**batch).logits, reloaded.model(**batch).logits, atol=1e-6)
    if chosen.mergeable:  # folded into the base weights: a plain model that generates the same
        merged = chosen.load(config.model, run / weights, precision="fp32")
        assert merged.adapter_merged and not hasattr(merged.model, "peft_config")
        assert generate(merged, DIALOGUES, settings, config.prompt).texts == trained


def test_adapter_is_much_smaller_than_full_model(tmp_path: Path) -> None:
    lora = train(
        load_config(
            None, tiny_overrides(tmp_path / "l", "tiny-llama", "lora", "training.max_steps=1", "lora.r=1")
        ),
        progress=False,
    )
    full = train(
        load_config(None, tiny_overrides(tmp_path / "f", "tiny-llama", "full", "training.max_steps=1")),
        progress=False,
    )
    adapter_bytes = (lora.run_dir / "adapter" / "adapter_model.safetensors").stat().st_size
    model_bytes = (full.run_dir / "model" / "model.safetensors").stat().st_size
    # r=1 on a 32-wide model: 1,024 LoRA numbers against 26,880 (the file header is ~3 KB of that).
    assert adapter_bytes < 0.1 * model_bytes, (adapter_bytes, model_bytes)


def test_notebook_lora_on_flan_t5_base_shapes_trains_1_4_percent() -> None:
    """The notebook's LoRA (r=32, q/v) on FLAN-T5-base shapes: 3.5M of 251M parameters (1.41%)."""
    model = load_model("random:flan-t5-base", empty_weights=True).model  # meta device: shapes only
    counts = count_parameters(LORA.apply(model, load_config(None, []).lora))
    assert counts["trainable"] == 3_538_944 and counts["trainable_percent"] == pytest.approx(1.41, abs=0.01)


def test_adapter_for_another_base_is_a_one_line_error(tmp_path: Path) -> None:
    result = train(
        load_config(None, tiny_overrides(tmp_path, "tiny-t5", "lora", "training.max_steps=1")), progress=False
    )
    with pytest.raises(ModelSpecError, match="does not match this model"):
        load_model("random:tiny-llama", adapter=str(result.run_dir / "adapter"))


def test_eval_rouge_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    overrides = tiny_overrides(
        tmp_path,
        "tiny-llama",
        "lora",
        "eval.strategy=steps",
        "eval.steps=2",
        "eval.rouge_dialogues=2",
        "eval.generation.max_new_tokens=8",
        "eval.metric=rouge1",
        "eval.early_stopping_patience=1",
        "training.max_steps=12",
    )
    result = train(load_config(None, overrides), progress=False)
    history = json.loads((result.run_dir / "logs" / "history.json").read_text())
    evals = [row for row in history if "eval_loss" in row]
    assert evals and all("eval_rouge1" in row for row in evals)
    # ROUGE of random tiny models stays flat, so patience 1 stops after the second evaluation.
    assert result.metadata["train"]["global_step"] < 12
    best = result.metadata["best"]
    assert best["metric"] == "eval_rouge1" and best["step"] in {row["step"] for row in evals}
    assert not (result.run_dir / "checkpoints").exists()


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_bf16_autocast_tracks_fp32(tmp_path: Path, model: str) -> None:
    """bf16 autocast (the CPU default where the CPU has bf16) follows the fp32 loss curve,
    for T5 too (fp16 overflows there; bf16 has fp32's range)."""
    curves = loss_curves(tmp_path, model, "full", "training.precision", ("fp32", "bf16"))
    assert all(abs(a - b) / a < 0.05 for a, b in zip(curves["fp32"], curves["bf16"])), curves


def test_cli_generate_with_the_trained_adapter_matches_the_trained_model(tmp_path: Path) -> None:
    from dialogtune.cli import main
    from dialogtune.data import DataConfig, load_records
    from dialogtune.io import read_jsonl

    config = load_config(None, tiny_overrides(tmp_path, "tiny-llama", "lora", "training.max_steps=4"))
    result = train(config, progress=False)
    output = tmp_path / "predictions.jsonl"
    args = [
        "generate",
        "--model",
        config.model,
        "--adapter",
        str(result.run_dir / "adapter"),
        "--data",
        config.data.source,
        "--split",
        "validation",
        "--max-new-tokens",
        "12",
        "--max-dialogue-tokens",
        "96",
        "--output",
        str(output),
    ]
    assert main(args) == 0
    records = load_records(DataConfig(source=config.data.source, split="validation"))
    expected = generate(
        result.loaded,
        [r.dialogue for r in records],
        GenerationSettings(max_new_tokens=12, max_dialogue_tokens=96),
        config.prompt,
    ).texts
    assert [row["prediction"] for row in read_jsonl(output)] == expected


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_recomputes_the_same_losses(tmp_path: Path, method: str) -> None:
    """Checkpointing trades time for memory, not results: fp32, no dropout, same loss curve."""

    def checkpointed_as_asked(checkpointing: str, result: Any) -> None:
        model = result.loaded.model
        base = model.get_base_model() if method == "lora" else model
        assert base.is_activation_checkpointing == (checkpointing == "true")

    curves = loss_curves(
        tmp_path,
        "tiny-llama",
        method,
        "training.gradient_checkpointing",
        ("false", "true"),
        "training.max_steps=3",
        after=checkpointed_as_asked,
    )
    assert len(curves["true"]) == 3
    assert curves["true"] == pytest.approx(curves["false"], rel=1e-5)


def test_compiled_training_steps_match_eager_and_leave_evaluation_eager(tmp_path: Path) -> None:
    """training.compile: the repeated blocks run compiled in training steps (forward and
    backward, here with gradient checkpointing too), the losses match eager ones, and the
    returned model runs eager again (generation is never compiled)."""
    from torch._dynamo.utils import counters

    def compiled_as_asked_then_eager(compiled: str, result: Any) -> None:
        assert (counters["stats"]["unique_graphs"] > 0) == (compiled == "true")
        counters.clear()
        blocks = result.loaded.model.get_base_model().model.layers
        assert all(block._compiled_call_impl is None for block in blocks)

    counters.clear()
    curves = compiled_and_eager_curves(
        tmp_path,
        "training.max_steps=3",
        "training.gradient_checkpointing=true",
        after=compiled_as_asked_then_eager,
    )
    assert len(curves["true"]) == 3
    assert curves["true"] == pytest.approx(curves["false"], rel=1e-3)


def test_compile_finds_the_repeated_blocks_of_both_families() -> None:
    from dialogtune.training.compile import RegionalCompile, repeated_blocks

    for name, expected in (("tiny-llama", "LlamaDecoderLayer"), ("tiny-t5", "T5Block")):
        model = load_model(f"random:{name}", dtype="fp32", device="cpu").model
        config = model.config
        layers = (
            config.num_layers + config.num_decoder_layers if name == "tiny-t5" else config.num_hidden_layers
        )
        blocks = repeated_blocks(LORA.apply(model, LoraSettings()))
        assert {type(b).__name__ for b in blocks} == {expected}
        assert len(blocks) == layers
    model._no_split_modules = None  # a model class that names no blocks: a config error, not a crash
    with pytest.raises(ConfigError, match="found no repeated blocks"):
        RegionalCompile(model)


def test_a_failing_compile_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    """No C++ compiler (simulated: inductor's compile_fx raises) -> exit 2, one line naming the fix."""
    import torch._inductor.compile_fx

    from dialogtune.cli import main

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler: g++ is not found")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", no_compiler)
    overrides = tiny_overrides(
        tmp_path, "tiny-llama", "lora", "training.max_steps=1", "training.compile=true"
    )
    config = tmp_path / "train.yaml"
    config.write_text("method: lora\n")
    args = [arg for override in overrides for arg in ("--set", override)]
    assert main(["train", str(config), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "training.compile=false" in err[-1] and "g++ is not found" in err[-1]
    assert "Traceback" not in "\n".join(err)
