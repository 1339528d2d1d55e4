"""The method registry: every place that offers a choice of method asks it, so a new method is its
module plus a registration; unsupported combinations are one-line errors; methods that cannot be
merged say so; prompt tuning generates through transformers' (PEFT's) ``generate``.

The new method here is PEFT's LoHa, written the way a method module is (settings dataclass +
method object), registered at run time and then used through ``train``, ``params``, config
validation, ``run`` (train, evaluate, report) and ``merge`` without any other edit.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml

from dialogtune.cli import build_parser, main
from dialogtune.errors import ConfigError
from dialogtune.methods import BUILTIN, get_method, method_names, register, unregister
from dialogtune.methods.base import AdapterMethod, count_trainable
from dialogtune.training import load_config

sys.path.insert(0, str(Path(__file__).parent))
from test_training import DIALOGUES, tiny_overrides, write_dialogues  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class LohaSettings:
    """LoHa (PEFT's Hadamard-product adapter): the test's new method."""

    SECTION: ClassVar[str] = "loha"

    r: int = field(default=4, metadata={"help": "rank of each Hadamard factor"})
    alpha: int = field(default=8, metadata={"help": "scaling numerator"})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"loha.r must be a positive integer, got {self.r}")


@dataclass(frozen=True)
class LohaMethod(AdapterMethod):
    def peft_config(self, settings: LohaSettings, kind: Any, model_type: str, tokenizer: Any) -> Any:
        from peft import LoHaConfig

        targets = ["q", "v"] if kind.name == "seq2seq" else ["q_proj", "v_proj"]
        return LoHaConfig(r=settings.r, alpha=settings.alpha, target_modules=targets)


@pytest.fixture
def loha() -> Iterator[Any]:
    method = register(
        LohaMethod(name="loha", summary="LoHa (test)", settings_cls=LohaSettings, peft_type="LOHA")
    )
    yield method
    unregister("loha")


@pytest.fixture
def causal_only() -> Iterator[Any]:
    method = register(
        LohaMethod(
            name="causal_loha", summary="test", settings_cls=LohaSettings, peft_type="LOHA", kinds=("causal",)
        )
    )
    yield method
    unregister("causal_loha")


def test_the_registry_lists_the_methods_and_the_cli_offers_them() -> None:
    assert method_names()[: len(BUILTIN)] == list(BUILTIN) == ["full", "lora", "dora", "ia3", "prompt_tuning"]
    params = build_parser("params")._subparsers._group_actions[0].choices["params"]
    method_flag = next(a for a in params._actions if a.dest == "method")
    assert list(method_flag.choices) == method_names()
    flags = {s for a in params._actions for s in a.option_strings}
    assert {"--lora-r", "--lora-use-rslora", "--dora-r", "--ia3-target-modules"} <= flags
    assert "--prompt-tuning-num-virtual-tokens" in flags and "--target-modules" in flags
    # What each method says about itself, which the recipe, server and merge act on.
    facts = {m: (get_method(m).mergeable, get_method(m).servable_unmerged) for m in BUILTIN}
    assert facts == {
        "full": (False, False),
        "lora": (True, True),
        "dora": (True, False),
        "ia3": (True, False),
        "prompt_tuning": (False, False),
    }


def test_a_new_method_needs_only_its_module_and_a_registration(
    loha: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # config validation and --set
    config = load_config(None, ["method=loha", "loha.r=2"])
    assert config.method_settings == LohaSettings(r=2) and config.to_dict()["loha"] == {"r": 2, "alpha": 8}
    with pytest.raises(ConfigError, match="loha.r must be a positive integer"):
        load_config(None, ["method=loha", "loha.r=0"])

    # params: --method choice and flags from the settings dataclass; PEFT's own count
    assert (
        main(["params", "--model", "random:tiny-llama", "--method", "loha", "--loha-r", "2", "--json"]) == 0
    )
    counted = json.loads(capsys.readouterr().out)
    from peft import LoHaConfig, get_peft_model

    from dialogtune.models.loading import load_model

    base = load_model("random:tiny-llama").model
    peft_model = get_peft_model(base, LoHaConfig(r=2, alpha=8, target_modules=["q_proj", "v_proj"]))
    assert counted["trainable"] == peft_model.get_nb_trainable_parameters()[0] > 0
    assert counted["method"] == "loha" and counted["loha"] == {"r": 2, "alpha": 8}

    # run: train, evaluate and report a loha variant (in process: the method is registered here)
    from dialogtune.experiments import load_experiment, run_experiment

    data = write_dialogues(tmp_path / "data", n_train=8, n_eval=3)
    variant = {"model": "random:tiny-llama", "data": {"source": str(data), "eval": None}}
    experiment = {
        "name": "loha",
        "output_dir": str(tmp_path / "exp"),
        "evaluation": {
            "data": {"source": str(data), "split": "validation"},
            "generation": {"max_new_tokens": 4, "precision": "fp32"},
            "n_resamples": 20,
        },
        "baseline": {"name": "zero-shot", "model": "random:tiny-llama"},
        "variants": [
            {
                "name": name,
                "config": variant,
                "set": {
                    "method": method,
                    "training.max_steps": 2,
                    "training.precision": "fp32",
                    "eval.strategy": "no",
                },
            }
            for name, method in (("loha", "loha"), ("lora", "lora"))
        ],  # fmt: skip
        "report": {"examples": 0, "random_examples": 0, "n_resamples": 20},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    result = run_experiment(load_experiment(path), progress=False, log=lambda _: None, isolate_training=False)
    adapter = result.output_dir / "train" / "loha" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LOHA"
    assert yaml.safe_load((result.output_dir / "eval" / "loha" / "config.yaml").read_text())[
        "adapter"
    ] == str(adapter)
    numbers = json.loads((result.output_dir / "report" / "report.json").read_text())
    methods = {p["name"]: p["method"] for p in numbers["pareto"]["points"]}
    assert methods == {"zero-shot": "zero-shot", "loha": "loha", "lora": "lora"}
    assert "## Quality against cost" in (result.output_dir / "report" / "report.md").read_text()

    # merge: the method says it can be merged; the merged model generates what base + adapter does
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(adapter), "--output", str(merged)]) == 0  # base from the contract
    from dialogtune.generation import GenerationSettings, generate

    settings = GenerationSettings(max_new_tokens=8, precision="fp32")
    with_adapter = generate(
        load_model("random:tiny-llama", adapter=str(adapter), dtype="fp32"), DIALOGUES, settings
    )
    assert generate(load_model(str(merged), dtype="fp32"), DIALOGUES, settings).texts == with_adapter.texts


def test_a_method_that_does_not_support_a_kind_is_a_one_line_error(
    causal_only: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("method: causal_loha\n")
    overrides = tiny_overrides(tmp_path, "tiny-t5", "causal_loha", "training.max_steps=1")
    assert main(["train", str(config), *[a for o in overrides for a in ("--set", o)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "dialogtune: error: method causal_loha does not support seq2seq models (it supports causal)"
    ]
    assert main(["params", "--model", "random:tiny-t5", "--method", "causal_loha"]) == 2
    assert "does not support seq2seq models" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--method", "ia3", "--ia3-feedforward-modules", "wo"],
            "ia3.feedforward_modules needs ia3.target_modules",
        ),
        (
            ["--method", "ia3", "--ia3-target-modules", "k", "--ia3-feedforward-modules", "wo"],
            "must be among",
        ),
        (["--method", "lora", "--target-modules", "nope"], "cannot apply lora: Target modules"),
        (
            ["--method", "prompt_tuning", "--prompt-tuning-num-virtual-tokens", "0"],
            "must be a positive integer",
        ),
        (["--method", "prompt_tuning", "--target-modules", "q"], "prompt_tuning has no target modules"),
    ],
)
def test_bad_method_settings_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["params", "--model", "random:tiny-t5", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("dialogtune: error:")


def test_prompt_tuning_generates_through_peft_and_transformers_generate(tmp_path: Path) -> None:
    """The continuous-batching engine does not feed virtual tokens, so a prompt-tuned model must
    take the static path, where PEFT's generate prepends them; the texts are what comes after the
    prompt, and they change when the virtual tokens do."""
    from dialogtune.generation import GenerationSettings, build_prompts, generate
    from dialogtune.methods.prompt_tuning import PromptTuningSettings
    from dialogtune.models.loading import load_model
    from dialogtune.prompts import PromptTemplate

    loaded = load_model("random:tiny-llama", dtype="fp32")
    plain = generate(loaded, DIALOGUES, GenerationSettings(max_new_tokens=6, precision="fp32")).texts
    method = get_method("prompt_tuning")
    loaded.model = method.apply(
        loaded.model, PromptTuningSettings(num_virtual_tokens=4), loaded.kind, tokenizer=loaded.tokenizer
    )
    loaded.model.eval()
    with torch.no_grad():  # move the virtual tokens far from the init: the outputs must follow
        loaded.model.prompt_encoder["default"].embedding.weight.mul_(-3.0)
    # One row per batch: PEFT drops position ids for prompt learning, so in a left-padded batch the
    # pads sit between the virtual tokens and the prompt and shift its positions (a documented limit).
    settings = GenerationSettings(max_new_tokens=6, precision="fp32", batch_size=1)
    result = generate(loaded, DIALOGUES, settings)
    assert result.engine == "generate"
    expected = []
    for dialogue in DIALOGUES:  # one at a time through PEFT's generate, cut after the prompt
        ids = loaded.kind.encode_prompts(
            loaded.tokenizer, build_prompts(loaded, [dialogue], PromptTemplate(), None)
        )
        tensor = torch.tensor(ids)
        out = loaded.model.generate(
            input_ids=tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=6, do_sample=False
        )
        assert torch.equal(out[0, : tensor.shape[1]], tensor[0])  # PEFT returns prompt + continuation
        text = out[0, tensor.shape[1] :].tolist()
        eos = loaded.tokenizer.eos_token_id
        text = text[: text.index(eos)] if eos in text else text
        expected.append(loaded.tokenizer.decode(text, skip_special_tokens=True).strip())
    assert result.texts == expected
    assert result.texts != plain  # the virtual tokens were used
    assert_cache_is_used_correctly(loaded.model, loaded.tokenizer)

    # Saved and reloaded through the inference path: not merged (it cannot be), same texts.
    from dialogtune.models.contract import InferenceContract

    folder = tmp_path / "adapter"
    folder.mkdir()
    method.save(
        loaded, folder, contract=InferenceContract(base_model="random:tiny-llama", method="prompt_tuning")
    )
    reloaded = method.load("random:tiny-llama", folder, precision="fp32")
    assert not reloaded.adapter_merged and count_trainable(reloaded.model)["trainable"] == 0
    assert generate(reloaded, DIALOGUES, settings).texts == result.texts
    assert_cache_is_used_correctly(reloaded.model, reloaded.tokenizer)


def assert_cache_is_used_correctly(model: Any, tokenizer: Any) -> None:
    """With the KV cache, PEFT's generate must give what it gives recomputing everything each step
    (without the cache it prepends the virtual tokens to the whole sequence every time: right by
    construction). PEFT 0.21 under transformers 5 re-prepends them at every cached step instead."""
    batch = tokenizer(DIALOGUES, return_tensors="pt", padding=True)
    with torch.inference_mode():
        cached = model.generate(**batch, max_new_tokens=8, do_sample=False)
        recomputed = model.generate(**batch, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, recomputed)


def test_merge_refuses_a_prompt_tuning_adapter_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dialogtune.methods.prompt_tuning import PromptTuningSettings
    from dialogtune.models.contract import InferenceContract
    from dialogtune.models.loading import load_model

    loaded = load_model("random:tiny-llama")
    method = get_method("prompt_tuning")
    loaded.model = method.apply(
        loaded.model, PromptTuningSettings(num_virtual_tokens=2, init="random"), loaded.kind
    )
    folder = tmp_path / "adapter"
    folder.mkdir()
    method.save(
        loaded, folder, contract=InferenceContract(base_model="random:tiny-llama", method="prompt_tuning")
    )
    assert main(["merge", "--adapter", str(folder), "--output", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip()
    assert "prompt_tuning adapter, which cannot be merged" in err and "\n" not in err
    assert not (tmp_path / "merged").exists()
    assert main(["generate", "--adapter", str(folder), "--merge", "yes", "--data", str(write_dialogues(tmp_path / "d")),
                 "--output", str(tmp_path / "p.jsonl")]) == 2  # fmt: skip
    assert "cannot be merged" in capsys.readouterr().err


def test_frozen_weights_follow_the_method() -> None:
    from dialogtune.training.precision import resolve_frozen_weights

    auto = {m: resolve_frozen_weights("auto", method=m, precision="bf16", sharded=False) for m in BUILTIN}
    # DoRA reads the base weights for its norm outside the matmul: their bf16 copy would change it.
    assert auto == {"full": "fp32", "lora": "bf16", "dora": "fp32", "ia3": "bf16", "prompt_tuning": "bf16"}


def test_method_settings_sections_and_dataclass_fields_stay_in_step() -> None:
    """Every method's YAML section reads its settings dataclass, and its defaults are valid."""
    for name in method_names():
        method = get_method(name)
        config = load_config(None, [f"method={name}"])
        if method.settings_cls is None:
            assert config.method_settings is None and name not in config.to_dict()
            continue
        assert type(config.method_settings) is method.settings_cls
        assert config.to_dict()[name] == dataclasses.asdict(method.settings_cls())
        first = dataclasses.fields(method.settings_cls)[0].name
        with pytest.raises(ConfigError, match=f"unknown key {name}.nope"):
            load_config(None, [f"method={name}", f"{name}.nope=1"])
        assert first  # a section with at least one setting


def test_no_code_outside_the_methods_package_switches_on_a_method_name() -> None:
    """The recipe, runner, config, CLI, server and report ask the method object; a comparison with a
    method's name (``method == "lora"``, ``peft_type != "LORA"``) anywhere else would be an edit a
    new method needs outside its module and the registry."""
    names = {n for m in BUILTIN for n in (get_method(m).name, get_method(m).peft_type) if n}
    src = Path(__file__).resolve().parents[1] / "src" / "dialogtune"
    found = []
    for path in sorted(src.rglob("*.py")):
        if "methods" in path.relative_to(src).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for operand in (node.left, *node.comparators):
                items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(i, ast.Constant) and i.value in names for i in items):
                    found.append(f"{path.relative_to(src)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


@pytest.mark.parametrize(("use_rslora", "scale"), [(False, 8 / 4), (True, 8 / 4**0.5)])
def test_rslora_scales_the_update_by_alpha_over_sqrt_r(use_rslora: bool, scale: float) -> None:
    from dialogtune.methods.lora import LoraSettings
    from dialogtune.models.loading import load_model

    settings = load_config(
        None, ["lora.r=4", "lora.alpha=8", f"lora.use_rslora={str(use_rslora).lower()}"]
    ).lora
    assert settings == LoraSettings(r=4, alpha=8, use_rslora=use_rslora)
    model = get_method("lora").apply(load_model("random:tiny-llama").model, settings)
    scalings = [
        m.scaling["default"] for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A
    ]
    assert len(scalings) == 14 and scalings == pytest.approx([scale] * 14)  # 7 projections x 2 layers
