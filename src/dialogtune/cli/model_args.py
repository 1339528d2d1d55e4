"""Shared CLI arguments for model, adapter, prompt and generation settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from dialogtune.cli.common import seed_int
from dialogtune.errors import ConfigError
from dialogtune.io import read_text_file
from dialogtune.models.specs import DEFAULT_MODEL
from dialogtune.prompts import NOTEBOOK_TEMPLATE, PromptTemplate


def add_model_args(parser: argparse.ArgumentParser, *, adapter: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id, local dir, .gguf file, {DEFAULT_MODEL} or random:<name> (default: %(default)s)",
    )
    if adapter:
        group.add_argument(
            "--adapter", default=None, help="LoRA adapter directory to load (frozen) on the base"
        )
    group.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), fp32, bf16, fp16")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation (greedy by default)")
    group.add_argument("--max-new-tokens", type=int, default=200)
    group.add_argument("--num-beams", type=int, default=1)
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam search")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=50)
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument("--no-repeat-ngram-size", type=int, default=0)
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument(
        "--max-dialogue-tokens",
        type=int,
        default=1024,
        help="truncate longer dialogues to this many tokens (the instruction is kept)",
    )
    group.add_argument("--no-sort", action="store_true", help="do not sort prompts by length before batching")
    group.add_argument("--generation-seed", type=seed_int, default=0, help="seed for sampling")
    add_prompt_args(parser)


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """``--prompt-template --chat --system-prompt``: read back by :func:`prompt_from_args`."""
    prompt = parser.add_argument_group("prompt")
    prompt.add_argument(
        "--prompt-template",
        default=None,
        help="template text or @FILE with one {dialogue} placeholder (default: the notebook's)",
    )
    prompt.add_argument(
        "--chat",
        choices=["auto", "always", "never"],
        default="auto",
        help="use the tokenizer's chat template for causal models (default: auto)",
    )
    prompt.add_argument("--system-prompt", default=None, help="system message for chat templates")


def generation_settings_from_args(args: argparse.Namespace):  # -> GenerationSettings
    from dialogtune.generation import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        batch_size=args.batch_size,
        max_dialogue_tokens=args.max_dialogue_tokens or None,
        sort_by_length=not args.no_sort,
        seed=args.generation_seed,
    )


def prompt_from_args(args: argparse.Namespace) -> PromptTemplate:
    text = args.prompt_template or NOTEBOOK_TEMPLATE
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise ConfigError(f"prompt template file not found: {path}")
        text = read_text_file(path, ConfigError)
    return PromptTemplate(template=text, chat=args.chat, system=args.system_prompt)
