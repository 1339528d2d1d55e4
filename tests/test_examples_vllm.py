"""The vLLM example client (examples/vllm/summarize_openai.py) sends the prompt dialogtune uses.

If ``CausalKind.format_prompt`` ever builds its chat messages differently, the example
would silently send vLLM another prompt; these tests catch that drift. No vLLM needed:
the request goes to a stub OpenAI-shaped server on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from dialogtune.models.contract import InferenceContract, write_contract
from dialogtune.models.kinds import CAUSAL
from dialogtune.models.random_configs import byte_tokenizer
from dialogtune.prompts import PromptTemplate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vllm" / "summarize_openai.py"
# SmolLM2's template: a default system message unless the conversation starts with one.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DIALOGUE = "#Person1#: Is the {shop} open?\n#Person2#: Until nine.\n"


def load_example():
    spec = importlib.util.spec_from_file_location("summarize_openai", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("system", [None, "You write one-sentence summaries."])
def test_prompt_ids_are_dialogtunes_tokens(tmp_path, system):
    """The ids sent to the server are exactly what dialogtune's own formatter and encoder give."""
    example = load_example()
    template = PromptTemplate(template="Summarize:\n{dialogue}\nSummary: ", system=system)
    write_contract(tmp_path, InferenceContract(prompt=template, max_dialogue_tokens=64, max_target_tokens=32))
    contract = example.adapter_contract(tmp_path)
    tokenizer = byte_tokenizer(append_eos=False)
    tokenizer.chat_template = CHATML
    ids = example.prompt_ids(tokenizer, DIALOGUE, contract, 64)
    expected = CAUSAL.format_prompt(tokenizer, DIALOGUE, template)
    assert ids == CAUSAL.encode_prompts(tokenizer, [expected])[0]
    served = tokenizer.decode(ids)
    assert ("You write one-sentence summaries." in served) == (system is not None)
    assert "You are a helpful AI assistant" not in served  # the template's default is not sent
    assert "{shop}" in served  # braces in a dialogue are text, not a placeholder


def test_request_is_greedy_and_reads_the_reply():
    example = load_example()
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"index": 0, "text": " A summary. "}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = example.request_body("dialogsum", [1, 2, 3], 64)
        text = example.complete(f"http://127.0.0.1:{server.server_port}/v1", body, api_key="k")
    finally:
        server.shutdown()
    assert text == "A summary."
    assert seen["path"] == "/v1/completions" and seen["auth"] == "Bearer k"
    assert seen["body"] == {
        "model": "dialogsum",
        "prompt": [1, 2, 3],
        "max_tokens": 64,
        "temperature": 0,
        "n": 1,
    }
