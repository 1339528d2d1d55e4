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
import yaml

from dialogtune.models.kinds import CAUSAL
from dialogtune.models.random_configs import byte_tokenizer

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
def test_messages_render_to_dialogtunes_prompt(tmp_path, system):
    example = load_example()
    prompt = {"template": "Summarize:\n{dialogue}\nSummary: ", "chat": "auto", "system": system}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": "m", "prompt": prompt}))
    template = example.run_prompt(tmp_path)
    tokenizer = byte_tokenizer(append_eos=False)
    tokenizer.chat_template = CHATML
    messages = example.messages_for(DIALOGUE, template)
    served = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert served == CAUSAL.format_prompt(tokenizer, DIALOGUE, template)
    assert ("You write one-sentence summaries." in served) == (system is not None)
    assert "{shop}" in served  # braces in a dialogue are text, not a placeholder


def test_request_is_greedy_and_reads_the_reply():
    example = load_example()
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " A summary. "}}]}
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
        body = example.request_body("dialogsum", [{"role": "user", "content": "hi"}], 64)
        text = example.chat(f"http://127.0.0.1:{server.server_port}/v1", body, api_key="k")
    finally:
        server.shutdown()
    assert text == "A summary."
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer k"
    assert seen["body"] == {
        "model": "dialogsum",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "temperature": 0,
        "n": 1,
    }
