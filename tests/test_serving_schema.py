"""Property-based API testing with schemathesis: no request built from the OpenAPI schema gets a 500.

Positive and negative examples for every operation (summarize, adapters, admin load,
health), sent in-process to an app on a tiny random model, with and without the
right token. Examples are kept few so the run stays well under a minute.
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

TOKEN = "schema-test-token"


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema-adapters")
    registry = AdapterRegistry(load_model("random:tiny-llama"))
    registry.load("a0", make_random_adapter("random:tiny-llama", root / "a0", seed=1))
    # Small limits keep generated requests cheap; what goes beyond them must be a 413/422.
    config = ServingConfig(
        api_token=TOKEN,
        default_max_new_tokens=4,
        max_new_tokens_limit=8,
        max_dialogues_per_request=4,
        max_dialogue_chars=2000,
        max_dialogue_tokens=2000,
        adapter_root=root,
        max_wait_ms=0,
    )
    return create_app(registry, config)


@pytest.fixture(scope="module")
def api_schema(served_app):
    return schemathesis.openapi.from_asgi("/openapi.json", served_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors(case):
    for token in (TOKEN, "wrong-token"):
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text
        if token != TOKEN and case.path != "/health":
            assert response.status_code >= 400  # nothing but health succeeds without the token
