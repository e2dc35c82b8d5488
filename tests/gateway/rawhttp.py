"""Raw HTTP for the error cases: the standard library, so no client library smooths anything."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        assert set(self.body) == {"error"}, self.body
        assert set(self.body["error"]) == {"message", "type", "param", "code"}, self.body
        return dict(self.body["error"])


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), parts.path


def call(
    method: str, url: str, body: Any = None, *, key: str | None = None, timeout: float = 60
) -> Reply:
    connection, path = _connection(url, timeout)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw))


class OpenStream:
    """A streamed completion read event by event; ``close()`` hangs up mid-stream."""

    def __init__(self, url: str, body: dict[str, Any], *, key: str, timeout: float = 60) -> None:
        self.connection, path = _connection(url, timeout)
        self.connection.request(
            "POST",
            path,
            body=json.dumps(body | {"stream": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.run_id = int(self.response.getheader("X-OpsDash-Run") or 0)

    def events(self) -> Iterator[str]:
        """Each event's data, as the text after ``data: ``."""
        for line in self.response:
            if line.startswith(b"data: "):
                yield line[6:].decode().strip()

    def close(self) -> None:
        """Hang up without reading to the end, as a killed client does."""
        # shutdown, not close: the response's file object keeps the socket open otherwise.
        if self.connection.sock is not None:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.connection.close()


def hang_up_while_waiting(
    url: str,
    body: dict[str, Any],
    *,
    key: str,
    until: Callable[[], bool],
    timeout: float = 30,
) -> None:
    """Send a request, wait (polling, within ``timeout``) until ``until()`` says the server
    has it, and hang up without reading a byte: a client that gave up waiting."""
    connection, path = _connection(url, timeout=timeout + 5)
    connection.request(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the server never took the request"
        time.sleep(0.05)
    assert connection.sock is not None
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
