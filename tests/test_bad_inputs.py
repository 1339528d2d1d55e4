"""Every verb, fed bad input, ends with one line ``dialogtune: error: ...`` and exit code 2.

A table of bad inputs (:data:`CASES`): corrupt files of every kind the tool reads (data
JSONL/JSON/CSV/parquet, YAML configs, model folders, GGUF files, LoRA adapters, run
directories, ``score`` tables), wrong types, bad flags, missing files and directories where
files belong. Each runs the real ``main()`` in-process and must print exactly one error line,
naming what is wrong (``expect``), with no traceback. Progress bars are not error output and
are not counted (a model folder whose weights lack a tensor is refused after loading them).

How many bad inputs are tried: ``python -m pytest tests/test_bad_inputs.py --collect-only -q``
(one test per case).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dialogtune.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread", "quiet_transformers")

SPEC = "random:tiny-llama"
ROWS = [
    {
        "id": "a",
        "dialogue": "#Person1#: Hi, how are you?\n#Person2#: Fine, thanks.",
        "summary": "They greet.",
    },
    {"id": "b", "dialogue": "#Person1#: Is the shop open?\n#Person2#: Until six.", "summary": "It opens."},
    {"id": "c", "dialogue": "#Person1#: Lunch?\n#Person2#: Sure, at noon.", "summary": "Lunch at noon."},
]
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this today
LONE = '"\\ud800"'  # a lone surrogate, written as the JSON escape json.loads accepts


@dataclass
class World:
    """Good inputs, built once; each case copies what it breaks."""

    root: Path
    data: Path  # validation.jsonl with ROWS
    model: Path  # a tiny-llama folder (safetensors + tokenizer)
    adapter: Path  # a LoRA adapter for random:tiny-llama
    t5_adapter: Path  # a LoRA adapter for random:tiny-t5
    run: Path  # an evaluation run directory (dialogtune evaluate)
    train_yaml: Path
    experiment_yaml: Path


@pytest.fixture(scope="module")
def quiet_transformers():
    # What `dialogtune` does through TRANSFORMERS_VERBOSITY when it imports transformers first.
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(before)


def _adapter(model_spec: str, target: Path) -> None:
    from dialogtune.methods.lora import METHOD as LORA
    from dialogtune.methods.lora import LoraSettings
    from dialogtune.models.adapters import write_base_info
    from dialogtune.models.loading import load_model

    loaded = load_model(model_spec)
    loaded.model = LORA.apply(loaded.model, LoraSettings(r=2, alpha=4))
    loaded.model.save_pretrained(str(target))
    write_base_info(target, loaded)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_torch_thread, quiet_transformers) -> World:
    from dialogtune.models.loading import load_model

    root = tmp_path_factory.mktemp("world")
    data = root / "data" / "validation.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    loaded = load_model(SPEC)
    loaded.model.save_pretrained(str(root / "model"))
    loaded.tokenizer.save_pretrained(str(root / "model"))
    _adapter(SPEC, root / "adapter")
    _adapter("random:tiny-t5", root / "t5_adapter")
    run = root / "run"
    args = ["--model", SPEC, "--data", str(data), "--max-new-tokens", "2", "--n-resamples", "5"]
    assert main(["evaluate", *args, "--output-dir", str(run)]) == 0
    train_yaml = root / "train.yaml"
    train_yaml.write_text(
        f"model: {SPEC}\ndata: {{source: {data.parent}, train: {{split: validation}}}}\n"
        f"output_dir: {root / 'train-out'}\ntraining: {{max_steps: 1}}\n",
        encoding="utf-8",
    )
    experiment_yaml = root / "experiment.yaml"
    experiment_yaml.write_text(
        f"output_dir: {root / 'exp-out'}\nbaseline: {{name: base, model: {SPEC}}}\n"
        f"evaluation: {{data: {{source: {data}}}}}\n",
        encoding="utf-8",
    )
    return World(
        root, data, root / "model", root / "adapter", root / "t5_adapter", run, train_yaml, experiment_yaml
    )


# ----------------------------------------------------------------------------- building bad inputs

Build = Callable[[World, Path], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    expect: str  # a part of the error line: usually the file at fault
    progress: bool = False  # the verb reports progress on stderr before it gets to the bad input


CASES: list[Case] = []


def case(id: str, expect: str, build: Build, *, progress: bool = False) -> None:
    CASES.append(Case(id, build, expect, progress))


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def broken_copy(
    source: Path, tmp: Path, rel: str, content: str | bytes | Callable[[bytes], bytes] | None
) -> Path:
    """A copy of folder ``source`` in which ``rel`` is replaced (None: a directory in its place)."""
    folder = tmp / source.name
    shutil.copytree(source, folder)
    target = folder / rel
    if content is None:
        target.unlink()
        target.mkdir()
    else:
        write(target, content(target.read_bytes()) if callable(content) else content)
    return folder


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def edit_json(**changes: object) -> Callable[[bytes], bytes]:
    return lambda data: json.dumps({**json.loads(data), **changes}).encode()


def row(**changes: object) -> str:
    return json.dumps({**ROWS[0], **changes})


# --- data files: (file name, content, expected text) -------------------------------------------
GOOD = json.dumps(ROWS[1])
BAD_DATA: list[tuple[str, str, str | bytes, str]] = [
    ("not-utf8", "v.jsonl", GOOD.encode() + b"\n" + row().encode().replace(b"Hi", b"H\xff"), "v.jsonl:2:"),
    ("malformed", "v.jsonl", GOOD + '\n{"id": "x", "dialogue": }\n', "v.jsonl:2:"),
    ("surrogate-dialogue", "v.jsonl", GOOD + "\n" + row().replace('"#Person1#: Hi', LONE[:-1]), "v.jsonl:2"),
    ("surrogate-summary", "v.jsonl", row(summary="x").replace('"x"', LONE), "field 'summary'"),
    ("surrogate-topic", "v.jsonl", row(topic="x").replace('"x"', LONE), "field 'topic'"),
    ("surrogate-key", "v.jsonl", '{"id": "a", "dialogue": "hi", ' + LONE + ": 1}", "a field name"),
    ("nested-100k", "v.jsonl", GOOD + "\n" + DEEP + "\n", "v.jsonl:2: JSON nested too deeply"),
    (
        "nested-in-field",
        "v.jsonl",
        '{"id": "a", "dialogue": "hi", "x": ' + "[" * 150 + "]" * 150 + "}",
        "nested",
    ),
    ("huge-integer", "v.jsonl", '{"id": ' + "7" * 5000 + ', "dialogue": "hi"}', "v.jsonl:1: malformed JSON"),
    ("list-line", "v.jsonl", GOOD + "\n[1, 2]\n", "v.jsonl:2: expected a JSON object"),
    ("dialogue-number", "v.jsonl", row(dialogue=5), "column 'dialogue' must be a string"),
    ("references-nested", "v.jsonl", row(summary=[["a"]]), "must be a list of strings"),
    ("empty-file", "v.jsonl", "", "empty file"),
    ("array-surrogate", "v.json", "[" + row().replace('"They greet."', LONE) + "]", "v.json"),
    ("array-deep", "v.json", "[" + DEEP + "]", "v.json"),
    ("csv-not-utf8", "v.csv", b"id,dialogue,summary\na,caf\xe9,x\n", "v.csv:2:"),
    ("csv-ragged", "v.csv", "id,dialogue,summary\na,hi\n", "v.csv:2: expected 3 fields"),
    ("parquet-garbage", "v.parquet", b"PAR1 this is not parquet at all PAR1", "v.parquet"),
    ("parquet-empty", "v.parquet", b"", "v.parquet"),
]
for _id, _name, _content, _expect in BAD_DATA:
    case(
        f"data-inspect/{_id}",
        _expect,
        lambda w, tmp, n=_name, c=_content: ["data", "inspect", "--data", str(write(tmp / n, c))],
    )
for _id, _name, _content, _expect in BAD_DATA[:9]:
    for _verb, _extra in (
        ("generate", ["--output", "out.jsonl"]),
        ("evaluate", ["--output-dir", "out"]),
    ):
        case(
            f"{_verb}/{_id}",
            _expect,
            lambda w, tmp, n=_name, c=_content, v=_verb, e=_extra: [
                v,
                "--model",
                SPEC,
                "--data",
                str(write(tmp / n, c)),
                *[str(tmp / x) if x.startswith("out") else x for x in e],
            ],
        )
case(
    "data-inspect/directory-without-splits",
    "no data files",
    lambda w, tmp: ["data", "inspect", "--data", str(tmp)],
)
case(
    "data-inspect/missing",
    "no such file",
    lambda w, tmp: ["data", "inspect", "--data", str(tmp / "nope.jsonl")],
)

# --- summarize input (a file or stdin) ---------------------------------------------------------
for _id, _content, _expect in [
    ("not-utf8", b"#Person1#: caf\xe9\n", "in.txt:1:"),
    ("jsonl-surrogate", '{"dialogue": ' + LONE + "}\n", "in.jsonl:1: field 'dialogue'"),
    ("jsonl-surrogate-other-field", '{"dialogue": "hi", "note": ' + LONE + "}\n", "field 'note'"),
    ("jsonl-deep", '{"dialogue": "hi"}\n' + DEEP + "\n", "in.jsonl:2: JSON nested too deeply"),
    ("jsonl-malformed", '{"dialogue": "hi"}\n{"dialogue": \n', "in.jsonl:2:"),
    ("jsonl-no-field", '{"text": "hi"}\n', "field 'dialogue' is missing"),
    ("empty", "  \n", "empty input"),
]:
    case(
        f"summarize/{_id}",
        _expect,
        lambda w, tmp, c=_content, i=_id: [
            "summarize",
            "--model",
            SPEC,
            str(write(tmp / ("in.txt" if i in ("not-utf8", "empty") else "in.jsonl"), c)),
        ],
    )
case("summarize/directory", "is a directory", lambda w, tmp: ["summarize", "--model", SPEC, str(tmp)])

# --- score inputs ------------------------------------------------------------------------------
for _id, _name, _content, _expect in [
    (
        "surrogate-prediction",
        "p.jsonl",
        '{"prediction": ' + LONE + ', "summary": "x"}\n',
        "field 'prediction'",
    ),
    ("deep", "p.jsonl", DEEP, "p.jsonl:1: JSON nested too deeply"),
    ("malformed", "p.jsonl", '{"prediction": "a", "summary": "b"}\n{"prediction": }\n', "p.jsonl:2:"),
    ("not-utf8", "p.csv", b"prediction,summary\ncaf\xe9,x\n", "p.csv:2:4: not valid UTF-8"),
    ("prediction-number", "p.jsonl", '{"prediction": 5, "summary": "b"}\n', "expected text"),
    ("references-nested", "p.jsonl", '{"prediction": "a", "references": [["b"]]}\n', "list of texts"),
    ("only-header", "p.csv", "prediction,summary\n", "no rows"),
]:
    case(f"score/{_id}", _expect, lambda w, tmp, n=_name, c=_content: ["score", str(write(tmp / n, c))])
case(
    "score/directory",
    "is a directory",
    lambda w, tmp: ["score", str((tmp / "d.jsonl").mkdir() or tmp / "d.jsonl")],
)

# --- model folders -----------------------------------------------------------------------------
BAD_MODEL: list[tuple[str, str, object, str]] = [
    ("config-garbage", "config.json", "not json{", "config.json:1:1: malformed JSON"),
    ("config-not-utf8", "config.json", b'{"model_type": "ll\xffama"}', "config.json:1:"),
    ("config-list", "config.json", "[]", "config.json: expected a JSON object"),
    ("config-no-model-type", "config.json", "{}", "config.json: no model_type"),
    ("config-unknown-type", "config.json", '{"model_type": "nonexistent"}', "cannot load the config"),
    ("config-deep", "config.json", DEEP, "config.json: JSON nested too deeply"),
    ("config-wrong-shapes", "config.json", edit_json(hidden_size=64), "model weights"),
    ("weights-truncated", "model.safetensors", half, "model.safetensors: not a complete safetensors file"),
    ("weights-garbage", "model.safetensors", b"\x00\xff" * 300, "model.safetensors: not a complete"),
    ("weights-empty", "model.safetensors", b"", "model.safetensors: not a complete"),
    ("weights-directory", "model.safetensors", None, "model.safetensors: is a directory"),
    ("tokenizer-garbage", "tokenizer.json", "garbage", "tokenizer.json:1:1: malformed JSON"),
    ("tokenizer-truncated", "tokenizer.json", half, "tokenizer.json:"),
    ("tokenizer-invalid", "tokenizer.json", '{"added_tokens": [], "model": {"type": "Nope"}}', "tokenizer"),
    ("tokenizer-config-garbage", "tokenizer_config.json", "{", "tokenizer_config.json:1:2"),
    ("generation-config-garbage", "generation_config.json", "garbage", "generation_config.json:1:1"),
    (
        "generation-config-eos-text",
        "generation_config.json",
        edit_json(eos_token_id="</s>"),
        "eos_token_id is",
    ),
    (
        "generation-config-eos-huge",
        "generation_config.json",
        edit_json(eos_token_id=[1, 10**6]),
        "vocabulary",
    ),
    ("chat-template-broken", "chat_template.jinja", "{% if %}", "chat template"),
]
for _id, _rel, _content, _expect in BAD_MODEL:
    case(
        f"params/{_id}",
        _expect,
        lambda w, tmp, r=_rel, c=_content: ["params", "--model", str(broken_copy(w.model, tmp, r, c))],
    )
for _id, _rel, _content, _expect in BAD_MODEL[:3] + BAD_MODEL[7:9] + BAD_MODEL[11:14]:
    case(
        f"summarize-model/{_id}",
        _expect,
        lambda w, tmp, r=_rel, c=_content: [
            "summarize",
            "--model",
            str(broken_copy(w.model, tmp, r, c)),
            str(write(tmp / "in.txt", "#Person1#: hi")),
        ],
    )
    case(
        f"data-inspect-tokenizer/{_id}",
        _expect,
        lambda w, tmp, r=_rel, c=_content: [
            "data",
            "inspect",
            "--data",
            str(w.data),
            "--model",
            str(broken_copy(w.model, tmp, r, c)),
        ],
    )

# The verbs that load a model at start, with a broken model folder.
MODEL_VERBS: dict[str, Callable[[Path, World, Path], list[str]]] = {
    "serve": lambda m, w, tmp: ["serve", "--model", str(m), "--port", "0"],
    "generate": lambda m, w, tmp: [
        "generate",
        "--model",
        str(m),
        "--data",
        str(w.data),
        "--output",
        str(tmp / "o"),
    ],
    "evaluate": lambda m, w, tmp: [
        "evaluate",
        "--model",
        str(m),
        "--data",
        str(w.data),
        "--output-dir",
        str(tmp / "o"),
    ],
    "merge": lambda m, w, tmp: [
        "merge",
        "--model",
        str(m),
        "--adapter",
        str(w.adapter),
        "--output",
        str(tmp / "o"),
    ],
}
for _verb in MODEL_VERBS:
    for _id, _rel, _content, _expect in (BAD_MODEL[0], BAD_MODEL[7], BAD_MODEL[11]):
        case(
            f"{_verb}-model/{_id}",
            _expect,
            lambda w, tmp, r=_rel, c=_content, v=_verb: MODEL_VERBS[v](
                broken_copy(w.model, tmp, r, c), w, tmp
            ),
        )


def _missing_tensor(w: World, tmp: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    folder = broken_copy(w.model, tmp, "config.json", lambda data: data)
    tensors = load_file(folder / "model.safetensors")
    del tensors[next(name for name in tensors if "mlp.up_proj" in name)]
    save_file(tensors, folder / "model.safetensors")
    return ["params", "--model", str(folder)]


case("params/weights-missing-a-tensor", "lack 1 of the model's parameters", _missing_tensor)
for _id, _content, _expect in [
    ("garbage", b"not a gguf file at all" * 10, "not a GGUF model file"),
    ("empty", b"", "empty.gguf"),
    ("header-only", b"GGUF\x03\x00\x00\x00", "header-only.gguf"),
]:
    case(
        f"params-gguf/{_id}",
        _expect,
        lambda w, tmp, c=_content, i=_id: ["params", "--model", str(write(tmp / f"{i}.gguf", c))],
    )
case(
    "params/random-config-garbage",
    "bad.json:1:1: malformed JSON",
    lambda w, tmp: ["params", "--model", f"random:{write(tmp / 'bad.json', 'garbage')}"],
)
case("params/model-missing", "model path not found", lambda w, tmp: ["params", "--model", str(tmp / "none")])
case("params/unknown-model", "unknown model", lambda w, tmp: ["params", "--model", "no-such-alias"])

# --- adapters ----------------------------------------------------------------------------------
BAD_ADAPTER: list[tuple[str, str, object, str]] = [
    ("config-garbage", "adapter_config.json", "garbage", "adapter_config.json:1:1: malformed JSON"),
    ("config-list", "adapter_config.json", "[]", "adapter_config.json: expected a JSON object"),
    ("config-deep", "adapter_config.json", DEEP, "adapter_config.json: JSON nested too deeply"),
    (
        "config-ia3",
        "adapter_config.json",
        edit_json(peft_type="IA3"),
        "keys that a IA3 adapter config does not have",
    ),
    (
        "config-unknown-method",
        "adapter_config.json",
        '{"peft_type": "LOHA"}',
        "peft_type is 'LOHA'; dialogtune",
    ),
    ("config-rank-text", "adapter_config.json", edit_json(r="x"), "r must be a positive integer"),
    ("config-alpha-null", "adapter_config.json", edit_json(lora_alpha=None), "lora_alpha must be a number"),
    (
        "config-unknown-target",
        "adapter_config.json",
        edit_json(target_modules=["nope"]),
        "cannot load adapter",
    ),
    ("config-other-targets", "adapter_config.json", edit_json(target_modules=["o_proj"]), "does not match"),
    ("weights-truncated", "adapter_model.safetensors", half, "adapter_model.safetensors: not a complete"),
    (
        "weights-garbage",
        "adapter_model.safetensors",
        b"\xff" * 500,
        "adapter_model.safetensors: not a complete",
    ),
    ("weights-directory", "adapter_model.safetensors", None, "has no adapter_model.safetensors"),
    ("base-info-garbage", "dialogtune_base.json", "garbage", "dialogtune_base.json:1:1: malformed JSON"),
    ("base-info-list", "dialogtune_base.json", "[]", "dialogtune_base.json: expected a JSON object"),
    (
        "base-info-signature-text",
        "dialogtune_base.json",
        '{"signature": "x"}',
        "'signature' must be an object",
    ),
    ("contract-garbage", "dialogtune_inference.json", "garbage", "dialogtune_inference.json:1:1: malformed"),
    ("contract-deep", "dialogtune_inference.json", DEEP, "dialogtune_inference.json: JSON nested too deeply"),
    ("contract-length-text", "dialogtune_inference.json", '{"max_dialogue_tokens": "x"}', "positive integer"),
    ("contract-prompt-text", "dialogtune_inference.json", '{"prompt": "x"}', "unreadable inference contract"),
    ("contract-no-placeholder", "dialogtune_inference.json", '{"prompt": {"template": "hi"}}', "placeholder"),
    (
        "config-prompt-bare",
        "adapter_config.json",
        '{"peft_type": "PROMPT_TUNING"}',
        "num_virtual_tokens must be",
    ),
    (
        "config-unknown-key",
        "adapter_config.json",
        edit_json(lora_gamma=1),
        "does not have: lora_gamma (written",
    ),
]
ADAPTER_VERBS: dict[str, Callable[[Path, Path], list[str]]] = {
    "summarize": lambda a, tmp: [
        "summarize",
        "--model",
        SPEC,
        "--adapter",
        str(a),
        str(write(tmp / "t.txt", "hi")),
    ],
    "generate": lambda a, tmp: [
        "generate",
        "--model",
        SPEC,
        "--adapter",
        str(a),
        "--output",
        str(tmp / "o.jsonl"),
    ],
    "merge": lambda a, tmp: ["merge", "--model", SPEC, "--adapter", str(a), "--output", str(tmp / "merged")],
    "serve": lambda a, tmp: ["serve", "--model", SPEC, "--adapter", f"x={a}", "--port", "0"],
}
for _id, _rel, _content, _expect in BAD_ADAPTER:
    case(
        f"summarize-adapter/{_id}",
        _expect,
        lambda w, tmp, r=_rel, c=_content: ADAPTER_VERBS["summarize"](broken_copy(w.adapter, tmp, r, c), tmp),
    )
for _verb in ("generate", "merge", "serve"):
    for _id, _rel, _content, _expect in (BAD_ADAPTER[0], BAD_ADAPTER[9], BAD_ADAPTER[12]):
        case(
            f"{_verb}-adapter/{_id}",
            _expect,
            lambda w, tmp, r=_rel, c=_content, v=_verb: [
                *ADAPTER_VERBS[v](broken_copy(w.adapter, tmp, r, c), tmp),
                *(["--data", str(w.data)] if v == "generate" else []),
            ],
        )
case(
    "summarize-adapter/for-another-base",
    "was trained for base 'random:tiny-t5'",
    lambda w, tmp: ADAPTER_VERBS["summarize"](w.t5_adapter, tmp),
)


def _other_adapters_weights(w: World, tmp: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    folder = broken_copy(w.adapter, tmp, "adapter_config.json", lambda data: data)
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file(
        {k: v for i, (k, v) in enumerate(sorted(tensors.items())) if i % 2},
        folder / "adapter_model.safetensors",
    )
    return ADAPTER_VERBS["summarize"](folder, tmp)


case(
    "summarize-adapter/weights-missing-half",
    "does not match its adapter_config.json",
    _other_adapters_weights,
)
case(
    "summarize-adapter/missing",
    "adapter directory not found",
    lambda w, tmp: ADAPTER_VERBS["summarize"](tmp / "x", tmp),
)
case(
    "summarize-adapter/a-model-folder",
    "not a PEFT adapter",
    lambda w, tmp: ADAPTER_VERBS["summarize"](w.model, tmp),
)

# --- YAML configs (train, run) -----------------------------------------------------------------
BAD_YAML: list[tuple[str, str | bytes, str]] = [
    ("not-utf8", b"model: caf\xe9\n", "c.yaml:1:"),
    ("malformed", "model: [unclosed\n", "c.yaml:2:1: not valid YAML"),
    ("tab-indent", "data:\n\tsource: x\n", "not valid YAML"),
    ("deep", "a: " + "[" * 100_000 + "\n", "c.yaml"),
    ("deep-block", "".join("  " * i + f"k{i}:\n" for i in range(150)), "nested more than 100 levels"),
    ("top-level-list", "- a\n- b\n", "top level must be a mapping"),
    ("surrogate", 'name: "\\ud800"\n', "holds a lone UTF-16 surrogate"),
    ("python-tag", "model: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
    ("unknown-key", "modle: x\n", "unknown key modle"),
]
for _verb, _extra in (("train", ["--print-config"]), ("run", ["--dry-run"])):
    for _id, _content, _expect in BAD_YAML:
        case(
            f"{_verb}-yaml/{_id}",
            _expect,
            lambda w, tmp, c=_content, v=_verb, e=_extra: [v, str(write(tmp / "c.yaml", c)), *e],
        )
    case(f"{_verb}-yaml/directory", "is a directory", lambda w, tmp, v=_verb: [v, str(tmp)])
    case(f"{_verb}-yaml/missing", "not found", lambda w, tmp, v=_verb: [v, str(tmp / "none.yaml")])
case(
    "run-yaml/date-key",
    "unsupported YAML content",
    lambda w, tmp: ["run", str(write(tmp / "c.yaml", "2024-01-01: x\n"))],
)
for _key in (
    "seed=-1",
    "seed=4294967296",
    "data.seed=-1",
    "eval.generation.seed=-5",
    "seed=1.5",
    "seed=true",
):
    case(
        f"train-set/{_key}",
        _key.split("=")[0] + " must be",
        lambda w, tmp, k=_key: ["train", str(w.train_yaml), "--set", k, "--print-config"],
    )
for _key in (
    "evaluation.seed=-1",
    "report.seed=4294967296",
    "evaluation.data.seed=-1",
    "evaluation.generation.seed=-2",
    "evaluation.n_resamples=100000000",
    "evaluation.generation.num_beams=1000",
):
    case(
        f"run-set/{_key}",
        _key.split("=")[0] + " ",
        lambda w, tmp, k=_key: ["run", str(w.experiment_yaml), "--set", k, "--dry-run"],
    )
case(
    "train-set/deep-value",
    "nested",
    lambda w, tmp: ["train", str(w.train_yaml), "--set", "lora.r=" + "[" * 100_000],
)
case(
    "train-set/deepspeed-garbage",
    "ds.json:1:2: malformed JSON",
    lambda w, tmp: [
        "train",
        str(w.train_yaml),
        "--set",
        f"training.deepspeed={write(tmp / 'ds.json', '{{')}",
    ],
)
case(
    "train-set/deepspeed-missing",
    "none.json: no such file",
    lambda w, tmp: ["train", str(w.train_yaml), "--set", f"training.deepspeed={tmp / 'none.json'}"],
)
case(
    "train-set/surrogate-prompt",
    "is not valid UTF-8 text",
    lambda w, tmp: [
        "train",
        str(w.train_yaml),
        "--set",
        "prompt.template={dialogue}\udcff",
        "--print-config",
    ],
)


def _experiment_with_a_damaged_stage(w: World, tmp: Path, content: bytes) -> list[str]:
    """An experiment whose training stage folder holds a config.yaml it cannot read."""
    from dialogtune.ownership import mark

    write(tmp / "exp" / "train" / "lora" / "config.yaml", content)
    mark(tmp / "exp", "experiment")
    variant = {
        "model": SPEC,
        "data": {"source": str(w.data.parent), "train": {"split": "validation"}},
        "training": {"max_steps": 1},
    }
    experiment = {
        "output_dir": str(tmp / "exp"),
        "baseline": {"name": "lora", "config": variant},
        "evaluation": {"data": {"source": str(w.data)}},
    }
    return ["run", str(write(tmp / "e.yaml", json.dumps(experiment)))]  # JSON is YAML


case(
    "run-stage/config-not-utf8",
    "train/lora/config.yaml:1:",
    lambda w, tmp: _experiment_with_a_damaged_stage(w, tmp, b"model: caf\xe9\n"),
    progress=True,
)
case(
    "run-stage/config-deep",
    "train/lora/config.yaml: YAML nested",
    lambda w, tmp: _experiment_with_a_damaged_stage(w, tmp, b"a: " + b"[" * 100_000),
    progress=True,
)

# --- run directories given to report -------------------------------------------------------------
BAD_RUN: list[tuple[str, str, object, str]] = [
    ("config-not-yaml", "config.yaml", "model: [unclosed\n", "config.yaml:2:1: not valid YAML"),
    ("config-not-utf8", "config.yaml", b"model: caf\xe9\n", "config.yaml:1:"),
    ("config-list", "config.yaml", "- a\n", "config.yaml: expected a mapping"),
    ("config-generation-text", "config.yaml", "generation: fast\n", "generation must be an object"),
    ("metadata-garbage", "metadata.json", "garbage", "metadata.json:1:1: malformed JSON"),
    ("metadata-list", "metadata.json", "[]", "metadata.json: expected a JSON object"),
    (
        "metadata-memory-text",
        "metadata.json",
        '{"peak_memory_mb": "lots"}',
        "peak_memory_mb must be a number",
    ),
    ("metrics-garbage", "metrics/validation.json", "{", "validation.json:1:2: malformed JSON"),
    ("metrics-deep", "metrics/validation.json", DEEP, "validation.json: JSON nested too deeply"),
    ("metrics-list", "metrics/validation.json", "[1]", "validation.json: expected a JSON object"),
    (
        "metrics-mean-text",
        "metrics/validation.json",
        edit_json(rouge1={"mean": "high"}),
        "rouge1.mean must be",
    ),
    ("metrics-mean-null", "metrics/validation.json", edit_json(rouge2={"mean": None}), "rouge2.mean must be"),
    (
        "metrics-mean-nan",
        "metrics/validation.json",
        edit_json(rouge1={"mean": float("nan")}),
        "rouge1.mean must be a ROUGE score",
    ),
    (
        "metrics-ci-huge",
        "metrics/validation.json",
        edit_json(rougeL={"mean": 0.1, "ci_high": 1e308}),
        "ci_high",
    ),
    (
        "metrics-rouge-types",
        "metrics/validation.json",
        edit_json(settings={"rouge_types": [1]}),
        "rouge_types",
    ),
    ("metrics-not-utf8", "metrics/validation.json", b'{"n": "\xff"}', "validation.json:1:"),
    ("metrics-directory", "metrics/validation.json", None, "is a directory"),
    (
        "predictions-garbage",
        "predictions/validation.jsonl",
        "garbage\n",
        "validation.jsonl:1:1: malformed JSON",
    ),
    (
        "predictions-surrogate",
        "predictions/validation.jsonl",
        '{"id": "a", "prediction": ' + LONE + ', "references": []}',
        "field 'prediction'",
    ),
    (
        "predictions-no-id",
        "predictions/validation.jsonl",
        '{"prediction": "a", "references": []}',
        "no 'id' field",
    ),
    (
        "predictions-id-list",
        "predictions/validation.jsonl",
        '{"id": [], "prediction": "a", "references": []}',
        "id must be",
    ),
    (
        "predictions-scores-text",
        "predictions/validation.jsonl",
        row(id="a", prediction="p", references=[], scores={"rouge1": "x"}),
        "scores must map",
    ),
    (
        "predictions-scores-list",
        "predictions/validation.jsonl",
        row(id="a", prediction="p", references=[], scores=[1]),
        "scores must be an object",
    ),
]
for _id, _rel, _content, _expect in BAD_RUN:
    case(
        f"report/{_id}",
        _expect,
        lambda w, tmp, r=_rel, c=_content: [
            "report",
            str(broken_copy(w.run, tmp, r, c)),
            "--output",
            str(tmp / "rep"),
        ],
    )
for _id, _content, _expect in [
    ("garbage", "garbage", "experiment.json:1:1: malformed JSON"),
    ("runs-text", '{"runs": "eval/a"}', "'runs' must be a list"),
    ("runs-no-path", '{"runs": [{"name": "a"}]}', "'runs' must be a list"),
]:
    case(
        f"report-experiment/{_id}",
        _expect,
        lambda w, tmp, c=_content: [
            "report",
            str(write(tmp / "exp" / "experiment.json", c).parent),
            "--output",
            str(tmp / "r"),
        ],
    )
case(
    "report/missing-run",
    "run directory not found",
    lambda w, tmp: ["report", str(tmp / "none"), "--output", str(tmp / "r")],
)
case(
    "report/a-file",
    "run directory not found",
    lambda w, tmp: ["report", str(w.data), "--output", str(tmp / "r")],
)
case("report/not-a-run", "no metrics", lambda w, tmp: ["report", str(tmp), "--output", str(tmp / "r")])

# --- flags -------------------------------------------------------------------------------------
FLAGS: list[tuple[str, list[str], str]] = [
    ("generate/limit-0", ["generate", "--output", "o", "--limit", "0"], "--limit"),
    (
        "generate/seed-negative",
        ["generate", "--output", "o", "--seed", "-1"],
        "--seed: a seed must be from 0",
    ),
    ("generate/seed-too-big", ["generate", "--output", "o", "--seed", str(2**32)], "--seed"),
    (
        "generate/generation-seed-too-big",
        ["generate", "--output", "o", "--generation-seed", str(2**32)],
        "seed",
    ),
    (
        "generate/generation-seed-text",
        ["generate", "--output", "o", "--generation-seed", "x"],
        "integer seed",
    ),
    ("generate/num-beams-text", ["generate", "--output", "o", "--num-beams", "x"], "--num-beams"),
    ("generate/no-output", ["generate"], "--output"),
    ("generate/unknown-flag", ["generate", "--output", "o", "--bogus"], "unrecognized arguments: --bogus"),
    ("evaluate/seed-negative", ["evaluate", "--output-dir", "o", "--seed", "-3"], "--seed"),
    ("evaluate/n-resamples-0", ["evaluate", "--output-dir", "o", "--n-resamples", "0"], "--n-resamples"),
    ("evaluate/lsum-split", ["evaluate", "--output-dir", "o", "--lsum-split", "x"], "--lsum-split"),
    ("data-inspect/seed-negative", ["data", "inspect", "--seed", "-1"], "--seed"),
    ("data-inspect/max-length-0", ["data", "inspect", "--max-length", "0"], "--max-length"),
    ("data/no-subcommand", ["data"], "required"),
    ("score/seed-negative", ["score", "f.csv", "--seed", "-1"], "--seed"),
    ("score/no-file", ["score"], "FILE"),
    ("report/seed-too-big", ["report", "r", "--output", "o", "--seed", str(2**40)], "--seed"),
    ("report/no-output", ["report", "r"], "--output"),
    ("serve/port", ["serve", "--port", "70000"], "port"),
    ("params/method", ["params", "--method", "loha"], "--method"),
    ("train/no-config", ["train"], "CONFIG.yaml"),
    ("verb/unknown", ["frobnicate"], "invalid choice"),
    ("generate/num-beams-huge", ["generate", "--output", "o", "--num-beams", str(10**20)], "num_beams"),
    ("summarize/num-beams-300", ["summarize", "--num-beams", "300", "-"], "num_beams"),
    ("summarize/max-new-tokens-huge", ["summarize", "--max-new-tokens", str(2**31), "-"], "max_new_tokens"),
    ("score/n-resamples-huge", ["score", "f.csv", "--n-resamples", str(10**20)], "--n-resamples: expected 1"),
    ("report/n-resamples-huge", ["report", "r", "--output", "o", "--n-resamples", str(10**8)], "at most"),
    ("report/title-not-utf8", ["report", "r", "--output", "o", "--title", "caf\udce9"], "not valid UTF-8"),
    ("evaluate/split-not-utf8", ["evaluate", "--output-dir", "o", "--split", "caf\udce9"], "not valid UTF-8"),
]
for _id, _argv, _expect in FLAGS:
    case(f"flags/{_id}", _expect, lambda w, tmp, a=_argv: list(a))
case(
    "flags/summarize-system-prompt-not-utf8",
    "argument 'caf\\udce9' is not valid UTF-8 text",
    lambda w, tmp: [
        "summarize",
        "--model",
        SPEC,
        "--system-prompt",
        "caf\udce9",
        str(write(tmp / "t.txt", "hi")),
    ],
)
case(
    "flags/prompt-template-file-missing",
    "prompt template file not found",
    lambda w, tmp: [
        "summarize",
        "--model",
        SPEC,
        "--prompt-template",
        f"@{tmp / 'none'}",
        str(write(tmp / "t.txt", "hi")),
    ],
)
LATIN1_TEMPLATE = b"caf\xe9 {dialogue}"
case(
    "flags/prompt-template-file-not-utf8",
    "p.txt:1:",
    lambda w, tmp: [
        "summarize",
        "--model",
        SPEC,
        "--prompt-template",
        f"@{write(tmp / 'p.txt', LATIN1_TEMPLATE)}",
        str(write(tmp / "t.txt", "hi")),
    ],
)
case(
    "flags/prompt-template-file-directory",
    "is a directory",
    lambda w, tmp: [
        "summarize",
        "--model",
        SPEC,
        "--prompt-template",
        f"@{tmp}",
        str(write(tmp / "t.txt", "hi")),
    ],
)

# ----------------------------------------------------------------------------- the test


def _is_progress_bar(line: str) -> bool:
    return "it/s]" in line or "s/it]" in line or line.rstrip().endswith("%|")


@pytest.fixture
def restore_logging():
    """``serve`` sets up logging for a process of its own; put pytest's back afterwards."""
    import logging

    access = logging.getLogger("dialogtune.serving.access")
    saved = (access.handlers[:], access.propagate, access.level, logging.getLogger().level)
    yield
    access.handlers[:], access.propagate = saved[0], saved[1]
    access.setLevel(saved[2])
    logging.getLogger().setLevel(saved[3])


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(
    bad: Case,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    restore_logging,
) -> None:
    argv = bad.build(world, tmp_path)
    capsys.readouterr()  # building the input may print (e.g. progress bars)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:  # each would be a line on a user's stderr
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not _is_progress_bar(line)]
    if bad.progress:  # `run` says what it starts; the error still ends it, alone on its line
        assert sum(line.startswith("dialogtune: error: ") for line in lines) == 1
        lines = lines[-1:]
    assert code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("dialogtune: error: "), err
    assert "Traceback" not in err
    assert bad.expect in lines[0], lines[0]
    # Warnings and log records at WARNING and above would be more lines on a user's stderr.
    assert not [str(w.message) for w in caught]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) > 150


def test_unreadable_file_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # Root reads anything, so permission is denied by hand: Path.read_bytes is where files are read.
    data = write(tmp_path / "validation.jsonl", json.dumps(ROWS[0]) + "\n")
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self == data:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert main(["data", "inspect", "--data", str(data)]) == 2
    assert capsys.readouterr().err == f"dialogtune: error: {data}: cannot read (Permission denied)\n"


def test_an_os_error_nobody_anticipated_is_still_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import dialogtune.data

    def unexpected(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/somewhere/else")

    monkeypatch.setattr(dialogtune.data, "load_records", unexpected)
    assert main(["data", "inspect", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "dialogtune: error: Permission denied: /somewhere/else\n"


def test_what_looks_odd_but_is_fine_still_reads(tmp_path: Path, capsys) -> None:
    # A surrogate *pair* escape is an ordinary emoji; brackets inside text are not nesting.
    text = '{"id": "a", "dialogue": "#Person1#: hi \\ud83d\\ude00 ' + "[" * 150 + '", "summary": "s"}\n'
    assert main(["data", "inspect", "--data", str(write(tmp_path / "v.jsonl", text)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dialogue_words"]["max"] == 4
    from dialogtune.data import read_records

    assert read_records(tmp_path / "v.jsonl")[0].dialogue.startswith("#Person1#: hi \U0001f600 [[[")
