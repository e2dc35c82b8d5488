"""Django's ASGI handler, except that named paths get their request body as a live stream.

Django's ``ASGIHandler`` reads every body into a ``SpooledTemporaryFile`` before the view runs:
for a model upload that is a second copy on disk of a file the view then writes again. For the
paths given here, the request's stream instead pulls each piece from the ASGI ``receive``
channel as the view reads it, so an upload handler writes the one copy (and a view that refuses
the request reads nothing at all). Everything else about the request (middleware, sessions,
CSRF, the view's own checks) is Django's, unchanged.

The view must be a sync view: it reads in its worker thread, each read waiting on the event
loop for the next piece.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler


class StreamedBody:
    """The request body as a read-only file that pulls pieces from ``receive`` on demand.

    It doubles as the ``receive`` Django's handler listens on for a disconnect while the view
    runs: that waits until the view has read the whole body (or the client left), so the two
    never compete for the same messages.
    """

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._buffer = bytearray()
        self._more = True
        self._disconnected = False
        self._body_done = asyncio.Event()
        self.closed = False

    async def __call__(self) -> dict[str, Any]:
        await self._body_done.wait()
        if self._disconnected:
            return {"type": "http.disconnect"}
        message: dict[str, Any] = await self._receive()
        return message

    def _finished(self, *, disconnected: bool) -> None:
        self._more = False
        self._disconnected = disconnected
        self._loop.call_soon_threadsafe(self._body_done.set)

    def _pull(self) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("A streamed request body is read from a sync view's thread only.")
        message = asyncio.run_coroutine_threadsafe(self._receive(), self._loop).result()
        if message["type"] == "http.disconnect":
            self._finished(disconnected=True)
            raise RequestAborted("The client went away before sending the whole body.")
        self._buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self._finished(disconnected=False)

    def read(self, size: int = -1) -> bytes:
        while self._more and (size < 0 or len(self._buffer) < size):
            self._pull()
        if size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    def readline(self, size: int = -1) -> bytes:
        while self._more and b"\n" not in self._buffer:
            self._pull()
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if 0 <= size < end:
            end = size
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def close(self) -> None:
        self.closed = True


class StreamingBodyASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose requests to ``streamed_paths`` (POST/PUT) read a ``StreamedBody``."""

    def __init__(self, streamed_paths: Iterable[str]) -> None:
        super().__init__()
        self.streamed_paths = frozenset(streamed_paths)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] in self.streamed_paths
            and scope["method"].upper() in ("POST", "PUT")
        ):
            receive = StreamedBody(receive)
        await super().__call__(scope, receive, send)

    async def read_body(self, receive: Any) -> Any:
        if isinstance(receive, StreamedBody):
            return receive
        return await super().read_body(receive)
