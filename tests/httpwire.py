"""HTTP/1.1 by hand, for tests that need what an HTTP library hides: a Content-Length that the
body never matches, a chunked body sent while the answer is read, a client that walks away."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Sender:
    """Sends body bytes in the background until ``total`` are sent or the server hangs up."""

    sock: socket.socket
    total: int
    chunked: bool = False
    piece: int = 64 * 1024
    sent: int = 0
    stopped_by_server: bool = False
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        data = b"x" * self.piece
        try:
            while self.sent < self.total:
                n = min(self.piece, self.total - self.sent)
                frame = f"{n:x}\r\n".encode() + data[:n] + b"\r\n" if self.chunked else data[:n]
                self.sock.sendall(frame)
                self.sent += n
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            self.stopped_by_server = True

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)


def connect(port: int, head: str, *, timeout: float = 20) -> socket.socket:
    """Open a connection and send a request's head (its request line and headers)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\n".join(lines)


def read_answer(sock: socket.socket, *, timeout: float = 20) -> Answer:
    """Read one response: its status line, headers, and body (by Content-Length or to EOF)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"the server closed the connection without an answer: {data!r}")
        data += piece
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            piece = b""
        if not piece:
            break
        body += piece
    return Answer(status=int(status_line.split()[1]), headers=headers, body=body)


def closed_by_server(sock: socket.socket, *, timeout: float = 10) -> bool:
    """Whether the server ends the connection (EOF or reset) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def multipart(
    fields: dict[str, str], *, filename: str, boundary: str = "opsdashboundary"
) -> tuple[bytes, bytes]:
    """The multipart framing around one file field ``file``: what goes before the file's bytes
    and what after them."""
    before = b""
    for name, value in fields.items():
        before += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    before += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return before, f"\r\n--{boundary}--\r\n".encode()
