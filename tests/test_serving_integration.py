"""Integration: the server on the real embedded SmolLM2-135M-Instruct answers one short request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dialogtune.models import load_model
from dialogtune.serving import AdapterRegistry, ServingConfig, create_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


def test_embedded_model_summarizes_over_http():
    app = create_app(
        AdapterRegistry(load_model("smollm2-135m-instruct")), ServingConfig(default_max_new_tokens=24)
    )
    dialogue = (
        "#Person1#: Hi, I'd like to book a table for two tonight at seven.\n"
        "#Person2#: Certainly. May I have your name?\n#Person1#: It's Smith."
    )
    with TestClient(app) as client:
        response = client.post("/v1/summarize", json={"dialogue": dialogue})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["random_weights"] is False and body["model"] == "smollm2-135m-instruct"
    assert len(body["summary"].split()) >= 5  # real words, not random bytes
