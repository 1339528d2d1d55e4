"""``dialogtune serve``: an HTTP server with one base model and many LoRA adapters.

    dialogtune serve --model smollm2-135m-instruct --adapter support=runs/a/adapter \\
        --adapter sales=runs/b/adapter [--host 127.0.0.1] [--port 8000]

Bearer-token auth is on when ``$DIALOGTUNE_API_TOKEN`` is set (the admin endpoint
that loads adapters at run time needs it). See docs/serving.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from dialogtune.cli.common import check_bindable, is_loopback, port_number, positive_int
from dialogtune.cli.fields import add_fields, given_values
from dialogtune.cli.model_args import add_model_args, add_prompt_args
from dialogtune.errors import ConfigError
from dialogtune.serving.config import TOKEN_ENV as _TOKEN_ENV
from dialogtune.serving.config import ServingConfig

# Flag names that differ from their ServingConfig field (kept as they were).
_FLAGS = {
    "default_max_new_tokens": "--max-new-tokens",
    "body_timeout_s": "--body-timeout",
    "mixed_adapter_batches": "--no-mixed-batches",
}
_INT_FIELDS = {f.name: f for f in dataclasses.fields(ServingConfig) if f.type in ("int", int)}


def register(parser: argparse.ArgumentParser) -> None:
    # Without --model, the base the adapters' saved contracts name (they must agree).
    add_model_args(parser, adapter=False, base_from_contract=True)
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a LoRA adapter to serve under NAME (repeatable); requests pick it by name",
    )
    parser.add_argument(
        "--merged",
        action="store_true",
        help="serve the one --adapter merged into the base weights: faster, but only that adapter "
        "is served (not the base, no run-time loads)",
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    net.add_argument("--port", type=port_number, default=8000, help="port (default: %(default)s)")
    net.add_argument(
        "--token-env",
        default=_TOKEN_ENV,
        metavar="VAR",
        help="environment variable holding the bearer token; unset: no auth (default: %(default)s)",
    )
    net.add_argument(
        "--adapter-root",
        default=None,
        metavar="DIR",
        help="the admin endpoint loads adapters only from under DIR",
    )
    net.add_argument(
        "--graceful-timeout",
        type=positive_int,
        default=60,
        metavar="S",
        help="on shutdown, wait up to S seconds for requests in flight (default: %(default)s)",
    )
    net.add_argument(
        "--torch-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads for the model thread (default: torch's choice, every core); 1 leaves "
        "cores to other work on a busy or shared CPU",
    )
    net.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    limits = parser.add_argument_group("limits and batching")
    # One flag per ServingConfig field: the flags, the defaults and the help cannot drift apart.
    add_fields(
        limits,
        ServingConfig,
        prefix="serving_",
        skip=("api_token", "adapter_root", "template"),  # the token comes from the environment
        flags=_FLAGS,
        types_={name: positive_int for name, f in _INT_FIELDS.items()},
        choices={"batching": ("auto", "micro")},
    )
    add_prompt_args(parser)
    parser.set_defaults(func=run)


def _setup_logging(level: str) -> None:
    # Request logs are JSON lines on their own; everything else gets a time and level.
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("dialogtune.serving.access")
    access.handlers[:] = [plain]
    access.propagate = False
    access.setLevel(logging.INFO)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(args: argparse.Namespace) -> int:
    from dialogtune.cli.model_args import base_from_contracts, prompt_from_args
    from dialogtune.models.contract import read_contract
    from dialogtune.models.inference import load_for_adapters, load_for_inference
    from dialogtune.serving import AdapterRegistry, create_app
    from dialogtune.serving.registry import parse_adapter_arg
    from dialogtune.serving.threads import hold_for_model_thread

    token = os.environ.get(args.token_env) or None
    adapters = [parse_adapter_arg(text) for text in args.adapter]
    if args.model is None:  # the base the adapters were trained on
        args.model = base_from_contracts({name: read_contract(path) for name, path in adapters})
    contract = None
    if args.merged:
        if len(adapters) != 1:
            raise ConfigError("--merged serves exactly one --adapter NAME=DIR, merged into the base")
        contract = read_contract(adapters[0][1])  # the merged adapter's prompt is the server's
    config = ServingConfig(
        **given_values(args, ServingConfig, prefix="serving_"),
        api_token=token,
        adapter_root=Path(args.adapter_root) if args.adapter_root else None,
        template=prompt_from_args(args, contract),
    )
    names = [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise ConfigError(f"--adapter names must be unique, got {', '.join(names)}")
    if len(names) > config.max_adapters:
        raise ConfigError(f"{len(names)} --adapter given; serving.max_adapters allows {config.max_adapters}")
    check_bindable(args.host, args.port)
    _setup_logging(args.log_level)
    log = logging.getLogger("dialogtune.serve")
    if not is_loopback(args.host) and token is None:
        log.warning(
            "listening on %s without a token: anyone who can reach this port can use the API (set $%s)",
            args.host,
            args.token_env,
        )

    # The model thread computes; the main thread loads with one thread so that it leaves no
    # OpenMP pool behind to throttle the model thread's (serving/threads.py).
    hold_for_model_thread(args.torch_threads)
    if args.merged:  # one adapter folded into the base: the fastest way to serve it alone
        name, path = adapters[0]
        loaded = load_for_inference(
            args.model, adapter=path, precision=args.precision, device=args.device, merge="yes"
        )
        registry = AdapterRegistry(loaded, merged=name)
        log.info("adapter '%s' (%s) merged into the base; only it is served", name, path)
    else:
        loaded = load_for_adapters(args.model, precision=args.precision, device=args.device)
        registry = AdapterRegistry(loaded)
        for name, path in adapters:
            info = registry.load(name, path)
            log.info("adapter '%s': %s (r=%s, %.2f MB)", name, info.path, info.rank, info.size_bytes / 1e6)
    log.info(
        "serving %s with %d adapter(s) on http://%s:%d (docs at /docs, auth %s)",
        loaded.spec.display_name,
        len(adapters),
        args.host,
        args.port,
        "on" if token else "off",
    )

    import uvicorn

    app = create_app(registry, config)
    # uvicorn's own access log is replaced by our JSON request log.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        **config.uvicorn_options(),
    )
    return 0
