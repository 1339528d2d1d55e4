"""Shared CLI arguments for model, adapter, precision, prompt and generation settings.

Generation and prompt flags come from the dataclasses' fields (:mod:`dialogtune.cli.fields`).
What is not given on the command line comes from the adapter's (or fine-tuned model's) saved
inference contract — the prompt, system message and lengths it was trained with — and only
then from the defaults. This module imports no torch, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialogtune.cli.common import positive_int, seed_int
from dialogtune.cli.fields import add_fields, given_values
from dialogtune.errors import ConfigError
from dialogtune.generation.settings import PRECISIONS, GenerationSettings
from dialogtune.io import read_text_file
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import PromptTemplate

if TYPE_CHECKING:
    from dialogtune.models.contract import InferenceContract

NO_SYSTEM = "\x00none"  # --no-system-prompt: no system message, whatever the contract says


def add_model_args(
    parser: argparse.ArgumentParser,
    *,
    adapter: bool = True,
    precision: str = "auto",
    base_from_contract: bool | None = None,
) -> None:
    """``--model`` (+ ``--adapter --merge``), ``--precision``, ``--device``.

    ``base_from_contract`` (default: when there is an ``--adapter``): without ``--model``, the
    base model an adapter's saved contract names (:func:`resolve_model`), else the default model.
    """
    group = parser.add_argument_group("model")
    if base_from_contract if base_from_contract is not None else adapter:
        group.add_argument(
            "--model",
            default=None,
            help=f"hub id, local dir, .gguf file, {DEFAULT_MODEL} or random:<name> (default: the base "
            f"model named in the adapter's saved contract, else {DEFAULT_MODEL})",
        )
    else:
        group.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            help=f"hub id, local dir, .gguf file, {DEFAULT_MODEL} or random:<name> (default: %(default)s)",
        )
    if adapter:
        group.add_argument("--adapter", default=None, help="adapter directory to load (frozen) on the base")
        group.add_argument(
            "--merge",
            choices=["auto", "yes", "no"],
            default="auto",
            help="fold the adapter into a private copy of the base weights for speed (auto: when PEFT can)",
        )
    group.add_argument(
        "--precision",
        "--dtype",  # the earlier name, kept working
        dest="precision",
        choices=[*PRECISIONS, "float32", "bfloat16", "float16"],
        default=precision,
        help=GenerationSettings.__dataclass_fields__["precision"].metadata["help"]
        + " (default: %(default)s)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation (greedy by default)")
    add_fields(
        group,
        GenerationSettings,
        prefix="gen_",
        skip=("precision",),  # --precision is a model flag (it decides how the weights load)
        flags={"sort_by_length": "--no-sort", "seed": "--generation-seed", "engine": "--generation-engine"},
        types_={"batch_size": positive_int, "max_new_tokens": positive_int, "seed": seed_int},
        choices={"engine": ("auto", "generate")},
    )
    add_prompt_args(parser)


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """``--prompt-template --chat --system-prompt --no-system-prompt --keep-default-system-prompt``."""
    group = parser.add_argument_group("prompt (default: the adapter's saved prompt, else the notebook's)")
    add_fields(
        group,
        PromptTemplate,
        prefix="prompt_",
        skip=("system", "keep_default_system"),
        flags={"template": "--prompt-template"},
        choices={"chat": ("auto", "always", "never")},
    )
    system = group.add_mutually_exclusive_group()
    system.add_argument(
        "--system-prompt",
        dest="prompt_system",
        metavar="TEXT",
        default=None,
        help="system message for chat models",
    )
    system.add_argument(
        "--no-system-prompt",
        dest="prompt_system",
        action="store_const",
        const=NO_SYSTEM,
        help="no system message (the default unless an adapter was trained with one)",
    )
    system.add_argument(
        "--keep-default-system-prompt",
        dest="prompt_keep_default_system",
        action="store_true",
        default=None,
        help="keep the default system message some chat templates insert (SmolLM2's names itself)",
    )


def resolve_model(args: argparse.Namespace) -> str:
    """``--model``, or when it was not given the base model the adapter's contract names (else the
    default model); sets ``args.model``."""
    if getattr(args, "model", None) is None:
        from dialogtune.models.contract import read_contract

        adapter = getattr(args, "adapter", None)
        args.model = base_from_contracts({adapter: read_contract(adapter)})
    return str(args.model)


def base_from_contracts(contracts: dict[Any, InferenceContract | None]) -> str:
    """The one base model the adapters' contracts (by adapter name) name; the default model when
    none names one. Adapters trained on different bases cannot share one: a one-line error."""
    named = {name: c.base_model for name, c in contracts.items() if c is not None and c.base_model}
    bases = sorted(set(named.values()))
    if len(bases) > 1:
        listing = ", ".join(f"{name}: {base}" for name, base in named.items())
        raise ConfigError(
            f"the adapters were trained on different base models ({listing}); "
            "one server has one base: pick it with --model"
        )
    return bases[0] if bases else DEFAULT_MODEL


def inference_contract(args: argparse.Namespace) -> InferenceContract | None:
    """The saved contract of ``--adapter`` (or of a fine-tuned ``--model`` folder), if any."""
    from dialogtune.models.contract import contract_for

    return contract_for(resolve_model(args), getattr(args, "adapter", None))


def prompt_from_args(args: argparse.Namespace, contract: InferenceContract | None = None) -> PromptTemplate:
    """The prompt: flags over the contract's prompt over the default."""
    base = contract.prompt if contract is not None else PromptTemplate()
    values: dict[str, Any] = given_values(args, PromptTemplate, prefix="prompt_")
    text = values.get("template")
    if text is not None and text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise ConfigError(f"prompt template file not found: {path}")
        values["template"] = read_text_file(path, ConfigError)
    if values.get("system") == NO_SYSTEM:
        values["system"] = None
    if "system" in values:
        values.setdefault("keep_default_system", False)
    return dataclasses.replace(base, **values)


def generation_settings_from_args(
    args: argparse.Namespace, contract: InferenceContract | None = None
) -> GenerationSettings:
    """Decoding settings: flags over the contract's lengths over the defaults."""
    base = GenerationSettings()
    if contract is not None:
        base = dataclasses.replace(
            base,
            max_new_tokens=contract.max_target_tokens or base.max_new_tokens,
            max_dialogue_tokens=contract.max_dialogue_tokens or base.max_dialogue_tokens,
        )
    values = given_values(args, GenerationSettings, prefix="gen_")
    if getattr(args, "precision", None) is not None:
        from dialogtune.models.precision import ALIASES

        values["precision"] = ALIASES.get(args.precision, args.precision)
    if values.get("max_dialogue_tokens") == 0:
        values["max_dialogue_tokens"] = None  # 0: no truncation
    return dataclasses.replace(base, **values)


def inference_inputs(args: argparse.Namespace) -> tuple[GenerationSettings, PromptTemplate]:
    """Settings and prompt for generate/evaluate/summarize: flags, else the contract, else defaults."""
    contract = inference_contract(args)
    return generation_settings_from_args(args, contract), prompt_from_args(args, contract)


def load_inference_model(args: argparse.Namespace, settings: GenerationSettings):  # -> LoadedModel
    """``--model`` (+ ``--adapter``, merged unless ``--merge no``) in ``settings.precision``."""
    from dialogtune.models.inference import load_for_inference

    return load_for_inference(
        resolve_model(args),
        adapter=getattr(args, "adapter", None),
        precision=settings.precision,
        device=args.device,
        merge=getattr(args, "merge", "auto"),
    )
