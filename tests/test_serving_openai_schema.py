"""Schemathesis over the OpenAI-compatible routes: no generated request gets a 500, and every
error they answer is in OpenAI's shape.

In-process on a tiny random Llama with a chat template and one adapter, with and without the
right token; few examples, so the run stays within seconds.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from dialogtune.models import load_model
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app
from dialogtune.serving.demo_adapters import make_random_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "openai-schema-token"


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-schema")
    loaded = load_model("random:tiny-llama")
    loaded.tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    registry = AdapterRegistry(loaded)
    registry.load("dialogsum", make_random_adapter("random:tiny-llama", root / "dialogsum", seed=1))
    config = ServingConfig(
        api_token=TOKEN,
        default_max_new_tokens=4,
        max_new_tokens_limit=8,
        max_dialogues_per_request=4,
        max_dialogue_chars=2000,
        max_prompt_tokens=2000,
        adapter_root=root,
    )
    return create_app(registry, config)


@pytest.fixture(scope="module")
def api_schema(served_app):
    return schemathesis.openapi.from_asgi("/openapi.json", served_app)


schema = schemathesis.pytest.from_fixture("api_schema").include(tag="openai")


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
def test_openai_routes_answer_without_server_errors(case):
    for token in (TOKEN, "wrong-token"):
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert "error" in response.json(), (case.method, case.path, response.status_code, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
        if token != TOKEN:
            assert response.status_code == 401
