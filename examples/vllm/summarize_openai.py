"""Summaries from an OpenAI-compatible server (vLLM, or dialogtune serve) with dialogtune's exact prompt.

dialogtune formats a dialogue with the adapter's saved inference contract
(``adapter/dialogtune_inference.json``: template, chat mode, system message, dialogue length):
the dialogue is cut to the saved length, filled into the template and wrapped in the model's
chat template — without the default system message some templates insert on their own
(SmolLM2's "You are ... SmolLM"), unless the contract keeps it. A server cannot be told to
drop that default through chat messages, so this script renders the prompt itself and sends
its **token ids** to ``/v1/completions`` (the OpenAI API accepts a list of ids as ``prompt``):
the server then runs exactly the tokens dialogtune would, greedy. ``--check-prompt`` prints
the rendered prompt for the first dialogue and exits.

    python examples/vllm/summarize_openai.py --adapter runs/smollm2-lora-cpu/adapter \\
        --tokenizer models/smollm2-135m-instruct --base-url http://127.0.0.1:8000/v1 --model dialogsum \\
        --input dialogues.jsonl --output predictions.jsonl

Input: JSONL with ``id`` and ``dialogue``; output: the same rows plus ``prediction``
(``dialogtune score predictions.jsonl`` reads it when the rows carry references).
Only the standard library and dialogtune are used; any OpenAI client sends the same JSON.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

from dialogtune.models.contract import InferenceContract, read_contract


def adapter_contract(adapter_dir: str | Path) -> InferenceContract:
    """How the adapter was prompted in training (its saved contract, or its run's config.yaml)."""
    contract = read_contract(adapter_dir)
    if contract is None:
        raise SystemExit(
            f"{adapter_dir}: no dialogtune_inference.json (not an adapter made by dialogtune train)"
        )
    return contract


def prompt_ids(
    tokenizer: Any, dialogue: str, contract: InferenceContract, max_dialogue_tokens: int
) -> list[int]:
    """The token ids dialogtune feeds its model for ``dialogue`` (``CausalKind``'s formatting)."""
    from dialogtune.models.kinds import CAUSAL, truncate_dialogue

    text = CAUSAL.format_prompt(
        tokenizer, truncate_dialogue(tokenizer, dialogue, max_dialogue_tokens), contract.prompt
    )
    return CAUSAL.encode_prompts(tokenizer, [text])[0]


def request_body(model: str, ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    """Greedy, like dialogtune's default (``temperature=0`` is greedy in vLLM and OpenAI's API)."""
    return {"model": model, "prompt": ids, "max_tokens": max_new_tokens, "temperature": 0, "n": 1}


def complete(base_url: str, body: dict[str, Any], api_key: str | None = None) -> str:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        base_url.rstrip("/") + "/completions", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)["choices"][0]["text"].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="the adapter folder (its dialogtune_inference.json)")
    parser.add_argument("--tokenizer", required=True, help="the exported base folder (export_base.py)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="dialogsum", help="the adapter's --lora-modules name")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: the contract's target length"
    )
    parser.add_argument("--max-dialogue-tokens", type=int, default=None, help="default: the contract's")
    parser.add_argument(
        "--check-prompt", action="store_true", help="print the first rendered prompt, then exit"
    )
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from dialogtune.io import write_jsonl

    contract = adapter_contract(args.adapter)
    max_new = args.max_new_tokens or contract.max_target_tokens or 200
    max_dialogue = args.max_dialogue_tokens or contract.max_dialogue_tokens or 1024
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = [
        json.loads(line) for line in Path(args.input).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    out = []
    for row in rows:
        ids = prompt_ids(tokenizer, row["dialogue"], contract, max_dialogue)
        if args.check_prompt:
            print(tokenizer.decode(ids))
            return
        out.append(
            {
                **row,
                "prediction": complete(args.base_url, request_body(args.model, ids, max_new), args.api_key),
            }
        )
    write_jsonl(args.output, out)
    print(f"wrote {len(out)} predictions to {args.output}")


if __name__ == "__main__":
    main()
