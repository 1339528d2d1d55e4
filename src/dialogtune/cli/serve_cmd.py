"""``dialogtune serve``: an HTTP server with one base model and many LoRA adapters.

    dialogtune serve --model smollm2-135m-instruct --adapter support=runs/a/adapter \\
        --adapter sales=runs/b/adapter [--host 127.0.0.1] [--port 8000]

Bearer-token auth is on when ``$DIALOGTUNE_API_TOKEN`` is set (the admin endpoint
that loads adapters at run time needs it). See docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dialogtune.cli.common import check_bindable, is_loopback, port_number, positive_int
from dialogtune.cli.model_args import add_model_args, add_prompt_args
from dialogtune.errors import ConfigError

_TOKEN_ENV = "DIALOGTUNE_API_TOKEN"  # = serving.config.TOKEN_ENV; not imported so --help stays fast


def register(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, adapter=False)
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a LoRA adapter to serve under NAME (repeatable); requests pick it by name",
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
        help="CPU threads for the model (default: torch's choice); 1 avoids OpenMP "
        "oversubscription on a busy or shared CPU",
    )
    net.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    limits = parser.add_argument_group("limits and batching")
    limits.add_argument(
        "--max-dialogue-chars",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="longer dialogues get 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-dialogue-tokens",
        type=positive_int,
        default=2048,
        metavar="N",
        help="longer dialogues get 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-dialogues-per-request",
        type=positive_int,
        default=32,
        metavar="N",
        help="larger requests get 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=2 * 1024 * 1024,
        metavar="N",
        help="larger request bodies get 413 before parsing (default: %(default)s)",
    )
    limits.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=200,
        metavar="N",
        help="summary length when a request sets none (default: %(default)s)",
    )
    limits.add_argument(
        "--max-new-tokens-limit",
        type=positive_int,
        default=512,
        metavar="N",
        help="largest max_new_tokens a request may ask for (default: %(default)s)",
    )
    limits.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="most dialogues per generate call; 1 handles requests strictly one by one "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        metavar="MS",
        help="how long an idle server waits for more requests to batch (default: %(default)s)",
    )
    limits.add_argument(
        "--max-queued-dialogues",
        type=positive_int,
        default=512,
        metavar="N",
        help="beyond this many waiting dialogues, requests get 503 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-request-cost",
        type=positive_int,
        default=4_000_000,
        metavar="N",
        help="most work one request may ask for, in token-steps: num_beams × max_new_tokens × "
        "Σ(dialogue tokens + max_new_tokens); costlier requests get 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-adapters",
        type=positive_int,
        default=16,
        metavar="N",
        help="most adapters loaded at once (--adapter and run-time loads); more get 409 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        default=128,
        metavar="N",
        help="most requests in progress at once; more get 503 (default: %(default)s)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a client has to send its whole request body; slower ones get 408 (default: %(default)s)",
    )
    limits.add_argument(
        "--no-mixed-batches", action="store_true", help="never put different adapters in one generate call"
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
    from dialogtune.cli.model_args import prompt_from_args
    from dialogtune.models.loading import load_model
    from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
    from dialogtune.serving.registry import parse_adapter_arg

    token = os.environ.get(args.token_env) or None
    config = ServingConfig(
        max_dialogue_chars=args.max_dialogue_chars,
        max_dialogue_tokens=args.max_dialogue_tokens,
        max_dialogues_per_request=args.max_dialogues_per_request,
        max_body_bytes=args.max_body_bytes,
        default_max_new_tokens=args.max_new_tokens,
        max_new_tokens_limit=args.max_new_tokens_limit,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queued_dialogues=args.max_queued_dialogues,
        max_request_cost=args.max_request_cost,
        max_adapters=args.max_adapters,
        max_connections=args.max_connections,
        body_timeout_s=args.body_timeout,
        mixed_adapter_batches=not args.no_mixed_batches,
        api_token=token,
        adapter_root=Path(args.adapter_root) if args.adapter_root else None,
        template=prompt_from_args(args),
    )
    adapters = [parse_adapter_arg(text) for text in args.adapter]
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

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model, dtype=args.precision, device=args.device)
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
