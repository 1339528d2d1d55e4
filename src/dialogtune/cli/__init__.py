"""The ``dialogtune`` command: thin verbs over the blocks.

Each verb lives in its own module exposing ``register(subparsers)``; the module is
imported lazily only for the verb being run, so ``dialogtune --help`` and simple
verbs stay fast (torch/transformers load only when a verb needs them).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from dialogtune import __version__
from dialogtune.errors import DialogtuneError
from dialogtune.io import find_lone_surrogate

# verb -> (module under dialogtune.cli, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "data": ("data_cmd", "inspect a dataset: counts, token lengths, truncation"),
    "params": ("params_cmd", "count total and trainable parameters"),
    "generate": ("generate_cmd", "generate summaries for a dataset split"),
    "evaluate": ("evaluate_cmd", "generate and score a dataset split (ROUGE with CIs)"),
    "score": ("score_cmd", "score an existing predictions file (CSV/JSONL)"),
    "train": ("train_cmd", "fine-tune a model (full, LoRA, DoRA, IA3, prompt tuning) from a YAML config"),
    "merge": ("merge_cmd", "merge an adapter (LoRA, DoRA, IA3) into its base model"),
    "run": ("run_cmd", "run a whole experiment: baseline + variants + report"),
    "report": ("report_cmd", "write a comparison report from run directories"),
    "summarize": ("summarize_cmd", "summarize dialogues from a file or stdin"),
    "serve": ("serve_cmd", "serve summaries over HTTP with many LoRA adapters"),
    "batch": ("batch_cmd", "summarize many dialogues into resumable shards, locally or on Ray"),
    "review": ("review_cmd", "blind side-by-side review page for people; votes in SQLite"),
    "sweep": ("sweep_cmd", "hyper-parameter search over training-config keys (Optuna), resumable"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors look like every other error: one line, exit code 2.

    Subcommand parsers inherit the class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dialogtune: error: {' '.join(message.split())} (see: {self.prog} --help)\n")


def _available_verbs() -> dict[str, tuple[str, str]]:
    return {
        verb: spec
        for verb, spec in VERBS.items()
        if importlib.util.find_spec(f"dialogtune.cli.{spec[0]}") is not None
    }


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dialogtune",
        description="Fine-tune, evaluate and serve language models for dialogue summarization.",
    )
    parser.add_argument("--version", action="version", version=f"dialogtune {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module_name, help_text) in _available_verbs().items():
        if only is not None and verb != only:
            sub.add_parser(verb, help=help_text, add_help=False)
            continue
        module = importlib.import_module(f"dialogtune.cli.{module_name}")
        module.register(sub.add_parser(verb, help=help_text, description=help_text))
    return parser


def _quiet_libraries() -> None:
    # Library deprecation chatter is noise for users of a CLI; real errors still show.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    # PEFT says this on every prompt-tuned forward pass: the virtual tokens get no positions of
    # their own, which is how prompt tuning is defined, not something the user can change.
    warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Bytes that are not UTF-8 reach Python as lone surrogates, which no tokenizer takes and no
    # UTF-8 file (config.yaml, predictions, report) can hold: refuse them before any work.
    not_utf8 = next((arg for arg in argv if find_lone_surrogate(arg)), None)
    if not_utf8 is not None:
        print(f"dialogtune: error: argument {ascii(not_utf8)} is not valid UTF-8 text", file=sys.stderr)
        return 2
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args) or 0)
    except DialogtuneError as exc:
        print(f"dialogtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dialogtune: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        message = os_error_line(exc)
        if message is None:
            raise  # no file involved: a bug, to be reported with its traceback
        print(f"dialogtune: error: {message}", file=sys.stderr)
        return 2


def os_error_line(exc: OSError) -> str | None:
    """One line for an operating-system error about a file (disk full, permissions, ...)."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}; nothing finished was lost (outputs are written "
            "atomically, unfinished predictions stay in *.partial files): free space and rerun the command"
        )
    if exc.filename is None:
        return None
    return f"{exc.strerror or type(exc).__name__}: {exc.filename}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
