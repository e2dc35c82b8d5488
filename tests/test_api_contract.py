"""/api/ keeps its contract with scripts: the statuses the schema declares, 401 for callers
without credentials, 413 and 4xx sentences for bodies it cannot use."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from opsdash.accounts.services import create_token, revoke_token

pytestmark = pytest.mark.django_db

WRITES = [
    ("post", "/api/runs", {"model": 1, "prompt": "hi"}),
    ("post", "/api/models", {"source": "url", "url": "http://127.0.0.1:9/x.gguf"}),
    ("post", "/api/workflows", {"name": "Nightly"}),
    ("post", "/api/savings/prices", {"provider": "x", "model": "y"}),
    ("post", "/api/models/1/retire", {}),
    ("delete", "/api/models/1", {}),
]


def _send(client: Client, method: str, url: str, body: object, **headers: str):  # type: ignore[no-untyped-def]
    return getattr(client, method)(
        url, json.dumps(body), content_type="application/json", **headers
    )


@pytest.mark.parametrize(("method", "url", "body"), WRITES, ids=lambda v: str(v)[:30])
def test_an_anonymous_write_gets_401_not_a_csrf_failure(method, url, body):  # type: ignore[no-untyped-def]
    response = _send(Client(enforce_csrf_checks=True), method, url, body)
    assert response.status_code == 401, response.content
    assert response.json() == {"detail": "Unauthorized"}


@pytest.mark.parametrize(("method", "url", "body"), WRITES, ids=lambda v: str(v)[:30])
def test_a_revoked_token_gets_401_on_writes(admin, method, url, body):  # type: ignore[no-untyped-def]
    issued = create_token(user=admin, name="old")
    revoke_token(token=issued.token)
    response = _send(
        Client(enforce_csrf_checks=True),
        method,
        url,
        body,
        HTTP_AUTHORIZATION=f"Bearer {issued.secret}",
    )
    assert response.status_code == 401, response.content


def test_a_signed_in_browser_write_without_the_csrf_token_is_still_refused(admin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    response = _send(client, "post", "/api/workflows", {"name": "Nightly"})
    assert response.status_code == 403 and "csrf" in response.json()["detail"].lower()


def test_a_json_body_over_the_limit_answers_413_with_a_sentence(admin, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    token = create_token(user=admin, name="t").secret
    response = _send(
        Client(),
        "post",
        "/api/runs",
        {"model": 1, "prompt": "x" * 20_000},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 413
    assert "limit of 10,000 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"model": 1, "prompt": "\\ud800"}', "not valid unicode"),
        ('{"model": 1, "messages": [{"role": "user", "content": "a\\udfffb"}]}', "surrogate"),
        ('{"model": 1, "prompt": ', "not valid json"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
    ids=["lone-surrogate", "surrogate-in-message", "truncated", "deep"],
)
def test_a_body_nothing_can_store_gets_400_with_a_sentence(as_admin, body, words):
    response = as_admin.post("/api/runs", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert words in response.json()["detail"].lower()


def test_a_field_that_fails_the_schema_is_named_in_a_sentence(as_admin):
    response = as_admin.post("/api/runs", {"model": "three"}, content_type="application/json")
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("model: ") and body["detail"].endswith(".")
    assert body["errors"][0]["loc"][-1] == "model"


def test_the_schema_declares_every_status_each_operation_can_answer(as_admin):
    schema = as_admin.get("/api/openapi.json").json()
    operations = {
        (method.upper(), path): op
        for path, item in schema["paths"].items()
        for method, op in item.items()
    }
    create_run = operations[("POST", "/api/runs")]["responses"]
    assert {"200", "400", "401", "403", "404", "409", "413", "422", "429"} <= create_run.keys()
    assert "Retry-After" in create_run["429"].get("headers", {})
    for (method, path), op in operations.items():
        assert {"401", "403"} <= op["responses"].keys(), f"{method} {path}"
        error = op["responses"]["401"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorOut"}, f"{method} {path}"
