"""``dialogtune params``: total / trainable parameters of a model under any fine-tuning method.

``--method`` choices and each method's flags (``--lora-r``, ``--ia3-target-modules``,
``--prompt-tuning-num-virtual-tokens``, ...) come from the method registry and the methods'
settings dataclasses, so a new method shows up here without an edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from dialogtune.cli.fields import add_fields, given_values
from dialogtune.cli.model_args import add_model_args
from dialogtune.methods import all_methods, get_method


def _prefix(name: str) -> str:
    return f"{name}__"


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, adapter=False)
    methods = all_methods()
    parser.add_argument(
        "--method",
        choices=[m.name for m in methods],
        default="full",
        help="fine-tuning method (default: %(default)s)",
    )
    parser.add_argument(
        "--target-modules",
        default=None,
        help="the chosen method's target modules: comma-separated names or all-linear "
        "(default: per model family)",
    )
    for method in methods:
        if method.settings_cls is None:
            continue
        group = parser.add_argument_group(f"--method {method.name}: {method.summary}")
        dash = method.name.replace("_", "-")
        flags = {
            f.name: f"--{dash}-{f.name.replace('_', '-')}" for f in dataclasses.fields(method.settings_cls)
        }
        add_fields(group, method.settings_cls, prefix=_prefix(method.name), flags=flags)
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace, method: object) -> object:
    cls = getattr(method, "settings_cls", None)
    if cls is None:
        return None
    values = given_values(args, cls, prefix=_prefix(method.name))
    names = {f.name for f in dataclasses.fields(cls)}
    if args.target_modules is not None and "target_modules" in names:
        values.setdefault("target_modules", args.target_modules)
    return cls(**values)  # validates (one-line ConfigError)


def run(args: argparse.Namespace) -> int:
    from dialogtune.errors import ConfigError
    from dialogtune.models.loading import load_model
    from dialogtune.models.params import format_parameters

    method = get_method(args.method)
    settings = _settings(args, method)  # validate the flags before spending time on loading
    if args.target_modules is not None and settings is not None and not hasattr(settings, "target_modules"):
        raise ConfigError(f"--target-modules: method {method.name} has no target modules")
    # random: models are built on the meta device: counting needs shapes, not values.
    loaded = load_model(
        args.model, dtype=args.precision, device=args.device, empty_weights=args.model.startswith("random:")
    )
    model_type = loaded.model.config.model_type
    method.check(settings, loaded.kind, model_type)
    model = method.apply(loaded.model, settings, loaded.kind, tokenizer=loaded.tokenizer)
    counts = method.count_parameters(model)
    result = {
        **counts,
        "model": loaded.spec.raw,
        "random_weights": loaded.spec.is_random,
        "kind": loaded.kind.name,
        "method": method.name,
    }
    if settings is not None:
        result[method.name] = method.describe(settings, model_type)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model: {loaded.spec.display_name} ({loaded.kind.name}), method: {method.name}")
        print(format_parameters(counts))
    return 0
