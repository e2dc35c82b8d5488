"""Bodies too large for their endpoint, or without the credentials it needs, are refused before
anything stores them: against the real server, by raw sockets, measuring what it wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from websockets.sync.client import connect as websocket_connect

from opsdash.accounts.services import create_token
from tests.catalog.helpers import partial_files
from tests.fixtures.personas import client_for
from tests.httpwire import Sender, closed_by_server, connect, head, read_answer
from tests.liveserver import LiveServer, serve

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class Server(LiveServer):
    token: str
    session: str


@pytest.fixture
def server(settings, admin: User) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.MAX_UPLOAD_BYTES = 8 * MIB
    token = create_token(user=admin, name="wire").secret
    session = client_for(admin).cookies["sessionid"].value
    with serve() as live:
        yield Server(live.url, live.pid, token, session)


def test_an_anonymous_gigabyte_post_to_healthz_is_refused_before_the_body_is_read(server):
    before = server.written()
    sock = connect(server.port, head("POST", "/healthz", {"Content-Length": str(GIB)}))
    sender = Sender(sock, total=64 * MIB).start()

    answer = read_answer(sock, timeout=10)

    assert answer.status == 413 and "larger than this endpoint accepts" in answer.body.decode()
    assert answer.headers["connection"] == "close" and closed_by_server(sock)
    sender.join(10)
    assert sender.stopped_by_server and sender.sent < 64 * MIB
    assert server.written() - before < MIB  # the answer, nothing of the body


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server):
    before = server.written()
    sock = connect(
        server.port,
        head("POST", "/api/runs", {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"}),
    )
    sender = Sender(sock, total=256 * MIB, chunked=True).start()

    answer = read_answer(sock, timeout=20)

    assert answer.status == 413
    assert "larger than this endpoint accepts" in json.loads(answer.body)["detail"]
    assert closed_by_server(sock)
    sender.join(10)
    assert sender.stopped_by_server and sender.sent < 256 * MIB
    assert server.written() - before < MIB


def test_an_oversized_v1_body_is_refused_in_openais_error_shape(server):
    sock = connect(
        server.port,
        head("POST", "/v1/chat/completions", {"Content-Length": str(64 * MIB)}),
    )
    answer = read_answer(sock, timeout=10)

    assert answer.status == 413
    error = json.loads(answer.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and "larger" in error["message"]


def upload_socket(server, headers: dict[str, str], *, token: str | None = None):  # type: ignore[no-untyped-def]
    """A socket that has sent the head of a multipart model upload, with ``headers`` added."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    content = {"Content-Type": "multipart/form-data; boundary=opsdashboundary"}
    return connect(server.port, head("POST", "/api/models/upload", auth | content | headers))


def test_an_admins_upload_over_the_limit_is_refused_before_any_of_it_is_written(server, settings):
    before = server.written()
    sock = upload_socket(server, {"Content-Length": str(9 * MIB)}, token=server.token)
    sender = Sender(sock, total=9 * MIB).start()

    answer = read_answer(sock, timeout=10)

    assert answer.status == 413 and "OPSDASH_MAX_UPLOAD_BYTES" in json.loads(answer.body)["detail"]
    sender.join(10)
    assert server.written() - before < MIB
    assert partial_files(settings.MODELS_DIR) == []


def test_a_chunked_upload_is_refused_unread_and_leaves_no_partial_file(server, settings):
    before = server.written()
    sock = upload_socket(server, {"Transfer-Encoding": "chunked"}, token=server.token)
    sender = Sender(sock, total=64 * MIB, chunked=True).start()

    answer = read_answer(sock, timeout=20)

    assert answer.status == 411 and "Content-Length" in json.loads(answer.body)["detail"]
    assert closed_by_server(sock)
    sender.join(10)
    assert sender.sent < 64 * MIB and server.written() - before < MIB
    assert partial_files(settings.MODELS_DIR) == []


def test_an_anonymous_upload_is_refused_before_its_body_is_read(server, settings):
    before = server.written()
    sock = upload_socket(server, {"Content-Length": str(4 * MIB)})
    sender = Sender(sock, total=4 * MIB).start()

    answer = read_answer(sock, timeout=10)

    assert answer.status == 401 and "Bearer" in json.loads(answer.body)["detail"]
    sender.join(10)
    assert server.written() - before < MIB
    assert partial_files(settings.MODELS_DIR) == []


def test_a_forged_session_cookie_is_no_credential_for_an_upload(server):
    sock = connect(
        server.port,
        head(
            "POST",
            "/api/models/upload",
            {
                "Cookie": "sessionid=notarealsession",
                "Content-Type": "multipart/form-data; boundary=opsdashboundary",
                "Content-Length": str(4 * MIB),
            },
        ),
    )
    assert read_answer(sock, timeout=10).status == 401


def test_a_json_request_under_the_limit_still_reaches_the_api(server):
    body = json.dumps({"source": "path", "path": "/nowhere/model.gguf"}).encode()
    sock = connect(
        server.port,
        head(
            "POST",
            "/api/models",
            {
                "Authorization": f"Bearer {server.token}",
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            },
        ),
    )
    sock.sendall(body)
    answer = read_answer(sock)

    assert answer.status == 400, answer.body
    assert "/nowhere/model.gguf is outside the folders" in json.loads(answer.body)["detail"]


def test_websockets_still_work(server):
    with websocket_connect(
        f"ws://127.0.0.1:{server.port}/ws/telemetry/",
        additional_headers={"Cookie": f"sessionid={server.session}", "Origin": server.url},
        open_timeout=10,
    ) as socket:
        message = json.loads(socket.recv(timeout=15))
    assert message["type"] in {"history", "frame"}
