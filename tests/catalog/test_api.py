"""/api/models in the shapes DESIGN.md promises to scripts."""

from __future__ import annotations

import pytest

from opsdash.accounts.services import create_token
from opsdash.catalog import jobs
from opsdash.catalog.models import LocalModel
from tests.catalog.helpers import place

pytestmark = pytest.mark.django_db(transaction=True)

STABLE_FIELDS = {
    "id",
    "name",
    "slug",
    "status",
    "error",
    "format",
    "architecture",
    "parameter_count",
    "quantization",
    "context_length",
    "size_bytes",
    "sha256",
    "backend",
}


@pytest.fixture
def bearer(admin) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=admin, name='t').secret}"}


def test_a_script_installs_by_path_and_follows_the_model_to_ready(
    client, bearer, model_root, tiny_gguf_path
):
    path = place(tiny_gguf_path, model_root)
    response = client.post(
        "/api/models",
        {"source": "path", "path": str(path), "name": "Tiny"},
        content_type="application/json",
        **bearer,
    )
    assert response.status_code == 202, response.content
    created = response.json()
    assert created.keys() >= STABLE_FIELDS and created["status"] == "installing"

    assert jobs.drain(timeout=60)
    model = client.get(f"/api/models/{created['id']}", **bearer).json()
    assert model["status"] == "ready" and model["architecture"] == "llama"
    assert model["name"] == "Tiny" and model["slug"] == "tiny"

    listing = client.get("/api/models", **bearer).json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == created["id"]

    assert client.post(f"/api/models/{model['id']}/retire", **bearer).json()["status"] == "retired"
    assert client.post(f"/api/models/{model['id']}/restore", **bearer).json()["status"] == "ready"
    conflict = client.delete(f"/api/models/{model['id']}", **bearer)
    assert conflict.status_code == 409 and "only retired" in conflict.json()["detail"]
    client.post(f"/api/models/{model['id']}/retire", **bearer)
    assert client.delete(f"/api/models/{model['id']}", **bearer).json()["status"] == "deleted"


def test_a_refused_install_answers_400_with_the_reason(client, bearer):
    response = client.post(
        "/api/models",
        {"source": "path", "path": "/etc/passwd"},
        content_type="application/json",
        **bearer,
    )
    assert response.status_code == 400 and "outside the folders" in response.json()["detail"]
    assert not LocalModel.objects.exists()


def test_a_duplicate_by_expected_sha256_answers_409(client, bearer, model_root, tiny_gguf_path):
    path = place(tiny_gguf_path, model_root)
    client.post(
        "/api/models",
        {"source": "path", "path": str(path)},
        content_type="application/json",
        **bearer,
    )
    jobs.drain(timeout=60)
    sha = LocalModel.objects.get().sha256
    response = client.post(
        "/api/models",
        {"source": "path", "path": str(path), "sha256": sha},
        content_type="application/json",
        **bearer,
    )
    assert response.status_code == 409 and "already installed" in response.json()["detail"]


def test_the_openapi_schema_lists_the_model_endpoints(client, bearer):
    schema = client.get("/api/openapi.json", **bearer).json()
    assert {"/api/models", "/api/models/{model_id}", "/api/models/{model_id}/retire"} <= schema[
        "paths"
    ].keys()


def test_a_revoked_token_gets_401(client, admin):
    from opsdash.accounts.services import revoke_token

    issued = create_token(user=admin, name="old")
    revoke_token(token=issued.token)
    response = client.get("/api/models", HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("source", "field"),
    [("path", "path"), ("url", "url")],
    ids=["path", "url"],
)
def test_a_nul_byte_in_an_install_location_answers_400_with_a_sentence(
    client, bearer, model_root, source, field
):
    location = f"{model_root}/model\x00.gguf" if source == "path" else "http://127.0.0.1/a\x00b"
    response = client.post(
        "/api/models", {"source": source, field: location}, "application/json", **bearer
    )
    assert response.status_code == 400, response.content
    assert "NUL byte" in response.json()["detail"]
    assert not LocalModel.objects.exists()


def test_only_a_real_duplicate_answers_409_whatever_the_sentence_says(client, bearer):
    # The refusal quotes the path, which here happens to contain the words "already installed".
    response = client.post(
        "/api/models",
        {"source": "path", "path": "/etc/already installed.gguf"},
        "application/json",
        **bearer,
    )
    assert response.status_code == 400, response.content
    assert "outside the folders" in response.json()["detail"]
