"""/ws/telemetry/: the sampler's frames, pushed to each open page.

Server → client: one ``{"type": "history", "frames": [...]}`` (the last 15 minutes) on connect,
then ``{"type": "frame", ...}`` every tick. Client → server: ``{"type": "ack"}`` after each
message it has read.

Flow control, because ASGI gives no back-pressure (daphne would buffer for a client that does
not read): one message in flight per socket. Frames that arrive while the last one is not yet
acknowledged replace each other (latest wins, one per host), so a slow page skips frames and a
stuck one costs one frame of memory. A socket with frames waiting and no ack for
``OPSDASH_TELEMETRY_STALL_SECONDS`` is closed with code 4408; the page reconnects by itself.

Fan-out: each web process has one member in the ``telemetry`` group (``Relay``), which hands
every frame to the sockets of that process. Joining every socket to the group instead costs one
channel-layer delivery per socket per tick, and the in-memory layer scans all its channels on
each receive: with 200 pages open that alone took tens of milliseconds a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from opsdash.accounts.roles import Cap, can
from opsdash.telemetry.frames import GROUP
from opsdash.telemetry.sampler import get_sampler
from opsdash.telemetry.services import AGENTS_GROUP

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_STALLED = 4408
REJOIN_SECONDS = 3600  # channels_redis forgets group members after a day


class Relay:
    """This process's member of the ``telemetry`` group, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: set[TelemetryConsumer] = set()
        self.task: asyncio.Task[None] | None = None
        self.joined = asyncio.Event()

    def start(self) -> None:
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel("telemetry.relay.")
        try:
            while True:
                await layer.group_add(GROUP, channel)
                self.joined.set()
                deadline = time.monotonic() + REJOIN_SECONDS
                while time.monotonic() < deadline:
                    try:
                        message = await asyncio.wait_for(layer.receive(channel), REJOIN_SECONDS)
                    except TimeoutError:
                        continue
                    if message.get("type") == "telemetry.frame":
                        await self._deliver(message)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(GROUP, channel)

    async def _deliver(self, message: dict[str, Any]) -> None:
        for socket in list(self.sockets):
            try:
                await socket.offer(message.get("host", ""), message["text"])
            except Exception:  # one broken socket must not starve the others
                logger.exception("telemetry frame to one socket failed")


_relays: dict[asyncio.AbstractEventLoop, Relay] = {}


async def relay_for_this_loop() -> Relay:
    loop = asyncio.get_running_loop()
    for old in [r for r in _relays.values() if r.loop.is_closed()]:
        _relays.pop(old.loop, None)
    relay = _relays.get(loop)
    if relay is None or relay.task is None or relay.task.done():
        relay = _relays[loop] = Relay(loop)
        relay.start()
    await relay.joined.wait()
    return relay


class TelemetryConsumer(AsyncWebsocketConsumer):
    required_cap = Cap.VIEW_TELEMETRY  # the permission walk in tests reads this

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(can)(user, self.required_cap):
            await self.close(code=CLOSE_FORBIDDEN)
            return
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
            await self.channel_layer.group_send(
                AGENTS_GROUP,
                {"type": "telemetry.request", "what": "history", "reply_to": self.channel_name},
            )
        self.relay.sockets.add(self)

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

    async def offer(self, host: str, text: str) -> None:
        """A new frame from the relay: keep it as the latest of its host, send it if free."""
        self.pending[host] = text
        await self._flush()

    async def telemetry_history(self, event: dict[str, Any]) -> None:
        """An agent's answer to the history request (scale-out mode)."""
        await self._send_now(event["text"])

    async def _flush(self) -> None:
        if not self.pending:
            return
        if self.sent_at is not None:
            if time.monotonic() - self.sent_at > self.stall_seconds:
                self.pending.clear()
                self.relay.sockets.discard(self)
                await self.close(code=CLOSE_STALLED)
            return
        host = next(iter(self.pending))
        await self._send_now(self.pending.pop(host))

    async def _send_now(self, text: str) -> None:
        self.sent_at = time.monotonic()
        await self.send(text_data=text)
