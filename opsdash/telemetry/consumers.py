"""/ws/telemetry/: every node's frames, pushed to each open page.

Server → client: one ``{"type": "history", "host", "frames": [...]}`` per node on connect (the
last 15 minutes), then ``{"type": "frame", ...}`` of every node every tick. Client → server:
``{"type": "ack"}`` after each message it has read.

Which nodes: in embedded mode, the one local host. On a hub, every live node (the fleet store,
``opsdash.telemetry.store``); ``?host=NAME`` limits the socket to one node, and ``?focus=NAME``
keeps every node's frames but sends the full history of that one only, the others' last
``SPARK_SECONDS`` (a page draws the others as small multiples: twenty nodes' 15 minutes would
be megabytes on every page load), and then the others' frames as cards (``frames.card``: no
per-core, per-device or per-process detail).

Flow control, because ASGI gives no back-pressure (a server would buffer for a client that does
not read): one message in flight per socket. Frames that arrive while the last one is not yet
acknowledged replace each other per host (latest wins, one per host, so one node's frame is
never dropped because another's came after it). At the ack, every host's waiting frame goes in
one message, ``{"type": "frames", "frames": [...]}`` (a lone frame goes as itself): with twenty
nodes a tick, frames taking turns one per round trip would wait up to twenty round trips,
in one message they wait one. A socket with frames waiting
and no ack for ``OPSDASH_TELEMETRY_STALL_SECONDS`` is closed with code 4408; the page reconnects
by itself.

Fan-out: each web process has one member in the ``telemetry`` group (``relay.Relay``), which
hands every frame to the sockets of that process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from opsdash.accounts.roles import Cap, can
from opsdash.telemetry.relay import relay_for_this_loop
from opsdash.telemetry.sampler import get_sampler
from opsdash.telemetry.store import get_store

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_STALLED = 4408
SPARK_SECONDS = 120  # the history of the nodes a page shows as small multiples
HISTORY_KEY = "\x00history:"  # a pending history message, queued before any frame


class TelemetryConsumer(AsyncWebsocketConsumer):
    required_cap = Cap.VIEW_TELEMETRY  # the permission walk in tests reads this

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(can)(user, self.required_cap):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.only_host: str | None = (query.get("host") or [None])[0] or None
        focus = (query.get("focus") or [None])[0] or None
        self.focus = focus
        self.pending: dict[str, str] = {}
        self.sent_at: float | None = None  # when the unacknowledged message went out
        self.stall_seconds = float(settings.TELEMETRY_STALL_SECONDS)
        self.relay = await relay_for_this_loop()
        await self.accept()
        if settings.TELEMETRY_EMBEDDED:
            sampler = await asyncio.to_thread(get_sampler)  # the first call starts it
            sampler.attach(asyncio.get_running_loop())
            await self._send_now(sampler.history_text())
        else:
            self._queue_histories(focus)
            await self._flush()
        self.relay.sockets.add(self)

    def _queue_histories(self, focus: str | None) -> None:
        store = get_store()
        hosts = store.live_hosts()
        if self.only_host is not None:
            hosts = [h for h in hosts if h == self.only_host]
        for host in hosts:
            full = focus is None or host == focus or host == self.only_host
            text = store.history_text(host, seconds=None if full else SPARK_SECONDS)
            if text is not None:
                self.pending[HISTORY_KEY + host] = text

    async def disconnect(self, code: int) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.sockets.discard(self)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Acks touch no database, so they skip the thread hop channels makes before every
        # handler to close stale connections (two hundred pages ack two hundred times a second).
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "ack":
            self.sent_at = None
            await self._flush()

    async def offer(self, host: str, text: str, card: str | None = None) -> None:
        """A new frame from the relay: keep it as the latest of its host, send it if free (as
        its node's ``card`` when the page shows another node in full)."""
        if self.only_host is not None and host != self.only_host:
            return
        if card is not None and self.focus is not None and host != self.focus:
            text = card
        self.pending[host] = text
        await self._flush()

    async def _flush(self) -> None:
        if not self.pending:
            return
        if self.sent_at is not None:
            if time.monotonic() - self.sent_at > self.stall_seconds:
                self.pending.clear()
                self.relay.sockets.discard(self)
                await self.close(code=CLOSE_STALLED)
            return
        key = next(iter(self.pending))
        if key.startswith(HISTORY_KEY):  # histories go one a message, before any frame
            await self._send_now(self.pending.pop(key))
            return
        hosts = [k for k in self.pending if not k.startswith(HISTORY_KEY)]
        waiting = [self.pending.pop(host) for host in hosts]
        if len(waiting) == 1:
            await self._send_now(waiting[0])
        else:  # joined as they are: no frame is parsed or encoded again
            await self._send_now('{"type":"frames","frames":[' + ",".join(waiting) + "]}")

    async def _send_now(self, text: str) -> None:
        self.sent_at = time.monotonic()
        await self.send(text_data=text)
