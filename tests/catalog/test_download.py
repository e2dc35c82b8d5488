"""Installing from a URL against a real HTTP server on loopback, misbehaving ones included."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings

from opsdash.catalog import services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from tests.catalog.helpers import model_files, partial_files

pytestmark = pytest.mark.django_db


class FileServer:
    """Serves one payload with a chosen misbehaviour; records the Range headers it saw."""

    def __init__(self) -> None:
        self.payload = b""
        self.mode = "ok"  # ok | short-once | short-always | hang | no-length | 404
        self.ranges: list[str | None] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests += 1
                outer.ranges.append(self.headers.get("Range"))
                outer.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str = "model.gguf") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        data, start = self.payload, 0
        if self.mode == "404":
            h.send_error(404, "Not Found")
            return
        if self.mode == "hang":
            time.sleep(4)
            return
        rng = h.headers.get("Range")
        if rng and self.mode == "short-once":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        if self.mode != "no-length":
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        cut_short = self.mode == "short-always" or (
            self.mode == "short-once" and self.requests == 1
        )
        h.wfile.write(body[: len(body) // 2] if cut_short else body)
        h.wfile.flush()
        h.close_connection = True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(tiny_gguf_path: Path) -> Iterator[FileServer]:
    srv = FileServer()
    srv.payload = tiny_gguf_path.read_bytes()
    yield srv
    srv.stop()


def download(url: str, admin, **options: str) -> LocalModel:  # type: ignore[no-untyped-def]
    source = services.InstallSource(SourceKind.URL, url, **options)
    return services.install_model(source=source, user=admin)


def test_it_installs_from_a_url_and_checks_the_expected_sha256(admin, server, tiny_gguf_path):
    import hashlib

    sha = hashlib.sha256(tiny_gguf_path.read_bytes()).hexdigest()
    model = download(server.url(), admin, expected_sha256=sha)

    assert model.status == ModelStatus.READY, model.error
    assert model.sha256 == sha and model.name == "model"
    assert model.bytes_done == model.bytes_total == len(server.payload)


def test_a_dropped_connection_resumes_with_a_range_request(admin, server):
    server.mode = "short-once"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.READY, model.error
    assert server.ranges[0] is None
    assert server.ranges[1] == f"bytes={len(server.payload) // 2}-"


def test_a_server_that_keeps_sending_too_few_bytes_fails_with_the_count(admin, server):
    server.mode = "short-always"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "closed the connection" in model.error and "2 attempts" in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_a_404_fails_at_once_with_the_status(admin, server):
    server.mode = "404"
    model = download(server.url("nope.gguf"), admin)

    assert model.status == ModelStatus.FAILED
    assert "404" in model.error and "nope.gguf" in model.error
    assert server.requests == 1, "a 404 is not retried"


def test_a_server_that_never_answers_times_out(admin, settings, server):
    settings.DOWNLOAD_TIMEOUT_SECONDS = 1
    server.mode = "hang"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "1 second" in model.error
    assert partial_files(settings.MODELS_DIR) == []


def test_only_http_and_https_addresses_are_accepted(admin):
    with pytest.raises(services.InstallRefused, match="not an http"):
        download("file:///etc/passwd", admin)


@pytest.fixture
def small_disk(settings, tmp_path):
    """A 1 MiB tmpfs as the models folder: a real disk that really runs out of space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    assert os.system(f"mount -t tmpfs -o size=1m tmpfs {mount}") == 0, "could not mount a tmpfs"
    settings.MODELS_DIR = mount
    settings.MIN_FREE_BYTES = 0
    yield mount
    os.system(f"umount {mount}")


def test_a_disk_that_fills_up_mid_download_fails_cleanly(admin, server, small_disk):
    # No Content-Length, so nothing can be checked up front: the disk fills while writing.
    server.mode = "no-length"
    server.payload = os.urandom(3 * 1024 * 1024)
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "ran out of space" in model.error, model.error
    assert partial_files(small_disk) == [] and model_files(small_disk) == []
