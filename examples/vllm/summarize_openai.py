"""Summaries from an OpenAI-compatible server (vLLM) with the exact prompt dialogtune uses.

dialogtune formats a dialogue as: the run's prompt template filled with the dialogue (the
dialogue first truncated to ``--max-dialogue-tokens`` tokens), sent as the user message of
the model's chat template, after the run's saved system prompt if it has one (otherwise the
chat template's own default). This script builds the same messages from the run's
``config.yaml`` and sends them to ``/v1/chat/completions``, greedy, so the server renders
the same prompt tokens; ``--check-prompt`` proves it against dialogtune's own formatter.

    python examples/vllm/summarize_openai.py --run runs/smollm2-lora-cpu \\
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

import yaml

from dialogtune.prompts import PromptTemplate


def run_prompt(run_dir: str | Path) -> PromptTemplate:
    """The prompt a ``dialogtune train`` run was trained with (its resolved ``config.yaml``)."""
    config = yaml.safe_load(Path(run_dir, "config.yaml").read_text(encoding="utf-8")) or {}
    return PromptTemplate(**config.get("prompt", {}))


def messages_for(dialogue: str, template: PromptTemplate) -> list[dict[str, str]]:
    """The chat messages dialogtune renders for a causal chat model (``CausalKind.format_prompt``)."""
    messages = [{"role": "user", "content": template.fill(dialogue).strip()}]
    if template.system is not None:
        messages.insert(0, {"role": "system", "content": template.system})
    return messages


def request_body(model: str, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, Any]:
    """Greedy, like dialogtune's default (``temperature=0`` is greedy in vLLM and OpenAI's API)."""
    return {"model": model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0, "n": 1}


def chat(base_url: str, body: dict[str, Any], api_key: str | None = None) -> str:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)["choices"][0]["message"]["content"].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the dialogtune train run directory (its config.yaml)")
    parser.add_argument("--tokenizer", required=True, help="the exported base folder (export_base.py)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="dialogsum", help="the adapter's --lora-modules name")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=200, help="dialogtune's default: 200")
    parser.add_argument("--max-dialogue-tokens", type=int, default=1024, help="dialogtune's default: 1024")
    parser.add_argument(
        "--check-prompt", action="store_true", help="compare with dialogtune's prompt, then exit"
    )
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from dialogtune.io import write_jsonl
    from dialogtune.models.kinds import CAUSAL, truncate_dialogue

    template = run_prompt(args.run)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = [
        json.loads(line) for line in Path(args.input).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    out = []
    for row in rows:
        dialogue = truncate_dialogue(tokenizer, row["dialogue"], args.max_dialogue_tokens)
        messages = messages_for(dialogue, template)
        if args.check_prompt:
            # What vLLM renders from these messages vs what dialogtune feeds its model.
            served = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ours = CAUSAL.format_prompt(tokenizer, dialogue, template)
            print(f"{row['id']}: {'same prompt' if served == ours else 'DIFFERENT PROMPT'}")
            continue
        body = request_body(args.model, messages, args.max_new_tokens)
        out.append({**row, "prediction": chat(args.base_url, body, args.api_key)})
    if not args.check_prompt:
        write_jsonl(args.output, out)
        print(f"wrote {len(out)} predictions to {args.output}")


if __name__ == "__main__":
    main()
