"""GET /api/fleet/files/<sha256> served by uvicorn: only an approved node's credential opens it,
only for a model placed on that node, whole or resumed from a byte offset, streamed."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings as django_settings

from opsdash.catalog.models import LocalModel
from opsdash.fleet import placements
from tests.factories import local_model
from tests.fleet.placing import Enrolled, enroll
from tests.liveserver import LiveServer, serve

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub(settings, tiny_model: LocalModel, admin) -> Iterator[tuple[LiveServer, Enrolled]]:  # type: ignore[no-untyped-def]
    """The tiny model placed on node gpu-1, and the hub serving it."""
    settings.FLEET = True
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    node = enroll("gpu-1")
    placements.place_model(model=tiny_model, node=node.node, user=admin)
    with serve() as server:
        yield server, node


@dataclass(frozen=True)
class Fetched:
    status_code: int
    headers: http.client.HTTPMessage
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def _open(
    server: LiveServer, sha256: str, credential: str | None, **headers: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A real HTTP/1.1 client (the agent's side of a fetch); the body is left to read."""
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("GET", f"/api/fleet/files/{sha256}", headers=headers)
    return connection, connection.getresponse()


def _get(server: LiveServer, sha256: str, credential: str | None, **headers: str) -> Fetched:
    connection, response = _open(server, sha256, credential, **headers)
    try:
        return Fetched(response.status, response.headers, response.read())
    finally:
        connection.close()


def test_the_placed_node_gets_the_whole_file_and_its_sha256_matches(hub, tiny_model) -> None:
    server, node = hub
    response = _get(server, tiny_model.sha256, node.credential)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == tiny_model.sha256
    assert response.content == Path(tiny_model.file_path).read_bytes()
    assert response.headers["Accept-Ranges"] == "bytes"
    assert int(response.headers["Content-Length"]) == tiny_model.size_bytes
    assert response.headers["ETag"] == f'"{tiny_model.sha256}"'


def test_a_cut_fetch_resumes_from_its_offset_with_206(hub, tiny_model) -> None:
    server, node = hub
    whole = Path(tiny_model.file_path).read_bytes()
    offset = len(whole) // 3
    response = _get(server, tiny_model.sha256, node.credential, Range=f"bytes={offset}-")
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {offset}-{len(whole) - 1}/{len(whole)}"
    assert int(response.headers["Content-Length"]) == len(whole) - offset
    assert hashlib.sha256(whole[:offset] + response.content).hexdigest() == tiny_model.sha256

    tail = _get(server, tiny_model.sha256, node.credential, Range="bytes=-100")
    assert tail.status_code == 206 and tail.content == whole[-100:]
    middle = _get(server, tiny_model.sha256, node.credential, Range="bytes=10-19")
    assert middle.status_code == 206 and middle.content == whole[10:20]
    assert middle.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"


def test_a_range_past_the_end_is_416_with_the_size(hub, tiny_model) -> None:
    server, node = hub
    size = tiny_model.size_bytes
    response = _get(server, tiny_model.sha256, node.credential, Range=f"bytes={size}-")
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert "past the end of the file" in response.json()["detail"]


def test_an_if_range_for_another_file_gets_the_whole_file(hub, tiny_model) -> None:
    server, node = hub
    response = _get(
        server, tiny_model.sha256, node.credential, Range="bytes=10-", **{"If-Range": '"other"'}
    )
    assert response.status_code == 200 and len(response.content) == tiny_model.size_bytes


def test_callers_without_an_approved_nodes_credential_get_401_with_a_sentence(
    hub, tiny_model
) -> None:
    server, _ = hub
    nobody = _get(server, tiny_model.sha256, None)
    assert nobody.status_code == 401 and nobody.headers["WWW-Authenticate"] == "Bearer"
    assert "node's credential" in nobody.json()["detail"]
    forged = _get(server, tiny_model.sha256, "odc_not-a-real-credential")
    assert forged.status_code == 401 and "enroll again" in forged.json()["detail"]


def test_a_node_waiting_for_approval_gets_no_files(settings, tiny_model, admin) -> None:
    settings.FLEET = True
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    approved, pending = enroll("gpu-1"), enroll("gpu-new", approve=False)
    placements.place_model(model=tiny_model, node=approved.node, user=admin)
    with serve() as server:
        response = _get(server, tiny_model.sha256, pending.credential)
    assert response.status_code == 401
    assert "waiting for an admin's approval" in response.json()["detail"]


def test_a_file_is_only_for_the_nodes_it_is_placed_on(settings, tiny_model, admin) -> None:
    settings.FLEET = True
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    placed, other = enroll("gpu-1"), enroll("gpu-2")
    placements.place_model(model=tiny_model, node=placed.node, user=admin)
    with serve() as server:
        response = _get(server, tiny_model.sha256, other.credential)
    assert response.status_code == 404
    assert "not deployed to node gpu-2" in response.json()["detail"]


def test_an_unknown_or_malformed_sha256_is_404_with_a_sentence(hub) -> None:
    server, node = hub
    for sha256 in ("0" * 64, "not-a-hash"):
        response = _get(server, sha256, node.credential)
        assert response.status_code == 404
        assert "No ready model on this hub has the sha256" in response.json()["detail"]


@pytest.mark.slow
def test_a_large_file_streams_without_the_hub_reading_it_whole(settings, admin) -> None:
    settings.FLEET = True
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    size = 96 * 1024 * 1024
    path = Path(django_settings.MODELS_DIR) / "big.gguf"
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
            digest.update(block)
    model = local_model("big", sha256=digest.hexdigest(), file_path=str(path), size_bytes=size)
    node = enroll("gpu-1")
    placements.place_model(model=model, node=node.node, user=admin)
    with serve() as server:
        connection, response = _open(server, model.sha256, node.credential)
        try:
            assert response.status == 200
            received = hashlib.sha256(response.read(1024 * 1024))
            time.sleep(1.0)  # a hub that lists the whole file before sending reads it all now
            read = psutil.Process(server.pid).io_counters().read_chars
            assert read < size // 4, f"the hub read {read} bytes of a {size}-byte file up front"
            while chunk := response.read(1024 * 1024):
                received.update(chunk)
        finally:
            connection.close()
    assert received.hexdigest() == model.sha256
