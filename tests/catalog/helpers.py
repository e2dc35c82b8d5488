"""Small builders shared by the catalog tests."""

from __future__ import annotations

import contextlib
import shutil
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opsdash.catalog.models import LocalModel


def place(source: Path, root: Path, name: str | None = None) -> Path:
    """Copy a fixture into the model root, as an admin would."""
    target = root / (name or source.name)
    shutil.copyfile(source, target)
    return target


def gguf_header(path: Path, *, tensors: int = 0, kvs: int = 0, tail: bytes = b"") -> Path:
    """A GGUF v3 header with the given counts and nothing (or ``tail``) after it."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs) + tail)
    return path


def partial_files(models_dir: Path) -> list[Path]:
    folder = models_dir / ".partial"
    return list(folder.iterdir()) if folder.exists() else []


def model_files(models_dir: Path) -> list[Path]:
    return [p for p in models_dir.iterdir() if p.is_file()]


def fresh(model: LocalModel) -> LocalModel:
    model.refresh_from_db()
    return model


def wait_until(condition: Callable[[], object], what: str, *, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class FileServer:
    """A real HTTP server on 127.0.0.1 serving one payload with a chosen misbehaviour.

    Modes: ok, short-once, short-always, hang, no-length, 404, and dribble (the headers at once,
    then one byte every ``dribble_every`` seconds for ``dribble_for`` seconds, then the rest).
    It records the Range headers and paths it saw.
    """

    def __init__(self) -> None:
        self.payload = b""
        self.mode = "ok"
        self.dribble_every = 0.2
        self.dribble_for = 60.0
        self.ranges: list[str | None] = []
        self.paths: list[str] = []
        self.requests = 0
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests += 1
                outer.ranges.append(self.headers.get("Range"))
                outer.paths.append(self.path)
                # The client may hang up (a cancel, a timeout): that is what the test is about.
                with contextlib.suppress(OSError):
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
            self.stopping.wait(4)
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
        h.close_connection = True
        if self.mode == "dribble":
            self._dribble(h, body)
            return
        cut_short = self.mode == "short-always" or (
            self.mode == "short-once" and self.requests == 1
        )
        h.wfile.write(body[: len(body) // 2] if cut_short else body)
        h.wfile.flush()

    def _dribble(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        until = time.monotonic() + self.dribble_for
        sent = 0
        while time.monotonic() < until and sent < len(body):
            h.wfile.write(body[sent : sent + 1])
            h.wfile.flush()
            sent += 1
            if self.stopping.wait(self.dribble_every):
                return
        h.wfile.write(body[sent:])
        h.wfile.flush()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
