"""Browser and API uploads stream into the models folder and finish like any install."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import pytest
from django.conf import settings

from opsdash.accounts.services import create_token
from opsdash.catalog import jobs
from opsdash.catalog.models import LocalModel, ModelStatus
from tests.catalog.helpers import fresh, model_files, partial_files
from tests.httpwire import connect, head, multipart, read_answer
from tests.liveserver import serve

pytestmark = pytest.mark.django_db(transaction=True)


def upload(client, data: bytes, name: str = "tiny.gguf", **fields: str):  # type: ignore[no-untyped-def]
    body = {"file": io.BytesIO(data), **fields}
    body["file"].name = name  # type: ignore[attr-defined]
    return client.post("/api/models/upload", body)


def test_an_admin_uploads_a_model_and_it_becomes_ready(as_admin, tiny_gguf_path):
    response = upload(as_admin, tiny_gguf_path.read_bytes(), name="my-upload.gguf")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "installing" and response.json()["source_kind"] == "upload"
    assert jobs.drain(timeout=60)
    model = LocalModel.objects.get(pk=response.json()["id"])
    assert model.status == ModelStatus.READY, model.error
    assert model.name == "my-upload" and model.size_bytes == tiny_gguf_path.stat().st_size


def test_a_script_uploads_with_a_bearer_token(admin, client, tiny_ggml_path):
    secret = create_token(user=admin, name="ci").secret
    body = {"file": io.BytesIO(tiny_ggml_path.read_bytes()), "model_type": "gpt2"}
    body["file"].name = "gpt2.bin"  # type: ignore[attr-defined]
    response = client.post("/api/models/upload", body, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 202, response.content
    assert jobs.drain(timeout=60)
    assert LocalModel.objects.get().status == ModelStatus.READY


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(as_admin, settings):
    settings.MAX_UPLOAD_BYTES = 64 * 1024
    response = upload(as_admin, b"GGUF" + b"\0" * (512 * 1024))

    assert response.status_code == 413
    assert "OPSDASH_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert partial_files(settings.MODELS_DIR) == [] and not LocalModel.objects.exists()


def test_a_garbage_upload_ends_as_a_failed_record_with_the_reason(as_admin):
    response = upload(as_admin, b"this is a README, not a model\n" * 100, name="README.gguf")

    assert response.status_code == 202
    assert jobs.drain(timeout=60)
    model = LocalModel.objects.get()
    assert model.status == ModelStatus.FAILED and "not a model file" in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_an_upload_without_a_file_says_what_is_missing(as_admin):
    response = as_admin.post("/api/models/upload", {"name": "x"})
    assert response.status_code == 400 and "file" in response.json()["detail"]


def test_an_operator_may_not_upload(as_operator, tiny_gguf_path):
    response = upload(as_operator, tiny_gguf_path.read_bytes())
    assert response.status_code == 403
    assert partial_files(settings.MODELS_DIR) == []


def test_a_session_upload_without_the_csrf_token_is_refused_and_leaves_nothing(
    admin, tiny_gguf_path
):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    response = upload(client, tiny_gguf_path.read_bytes())

    assert response.status_code == 403
    assert partial_files(settings.MODELS_DIR) == [] and not LocalModel.objects.exists()


# ----------------------------------------------------------------------------- the real server


@pytest.fixture
def server(settings, admin):  # type: ignore[no-untyped-def]
    """The live uvicorn server, and a personal token of the admin's to upload with."""
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    token = create_token(user=admin, name="wire").secret
    with serve() as live:
        yield live, token


def _start_upload(port: int, token: str, size: int, filename: str):  # type: ignore[no-untyped-def]
    before, after = multipart({"name": "streamed"}, filename=filename)
    sock = connect(
        port,
        head(
            "POST",
            "/api/models/upload",
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "multipart/form-data; boundary=opsdashboundary",
                "Content-Length": str(len(before) + size + len(after)),
            },
        ),
    )
    sock.sendall(before)
    return sock, after


def _wait_for(condition, seconds: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_an_upload_is_written_to_disk_once_by_the_real_server(server):
    live, token = server
    data = os.urandom(32 * 1024 * 1024)
    sock, after = _start_upload(live.port, token, len(data), "big.gguf")
    before = live.written()
    sock.sendall(data + after)
    answer = read_answer(sock, timeout=60)
    written = live.written() - before

    assert answer.status == 202, answer.body
    # The file's bytes went to write() once: into the partial file, not first into a spool.
    assert len(data) <= written < len(data) * 1.25, f"{written} bytes written for {len(data)}"
    model = LocalModel.objects.get(pk=json.loads(answer.body)["id"])
    assert model.bytes_total == len(data)


def test_an_upload_through_the_real_server_keeps_its_sha256(server, tiny_gguf_path):
    live, token = server
    data = tiny_gguf_path.read_bytes()
    sock, after = _start_upload(live.port, token, len(data), "tiny.gguf")
    sock.sendall(data + after)
    answer = read_answer(sock, timeout=30)

    assert answer.status == 202, answer.body
    model = LocalModel.objects.get(pk=json.loads(answer.body)["id"])
    assert _wait_for(lambda: fresh(model).status != ModelStatus.INSTALLING, 60)
    assert model.status == ModelStatus.READY, model.error
    assert model.name == "streamed" and model.sha256 == hashlib.sha256(data).hexdigest()


def test_a_client_that_leaves_mid_upload_leaves_no_partial_file_and_no_record(server):
    live, token = server
    sock, _ = _start_upload(live.port, token, 64 * 1024 * 1024, "leaving.gguf")
    sock.sendall(b"GGUF" + b"\0" * (8 * 1024 * 1024))

    # The bytes stream into the partial file as they arrive, before the body is complete...
    assert _wait_for(lambda: partial_files(settings.MODELS_DIR) != [], 10)
    sock.close()

    # ...and a client that walks away takes them with it.
    assert _wait_for(lambda: partial_files(settings.MODELS_DIR) == [], 10)
    assert not LocalModel.objects.exists()
