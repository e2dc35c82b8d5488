"""What an agent sends the hub: the outbox of messages that must arrive (generation events,
placement and install reports), in order and across reconnects, and the messages that need
not (frames and heartbeats: only the latest matters, so they are dropped rather than queued).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from opsdash.fleet import protocol
from opsdash.fleet.agent_node import loaded_entry

#: Outgoing events and reports kept while no hub holds the socket.
OUTBOX_LIMIT = 10_000
#: A frame is dropped when this much is still waiting in the socket's write buffer.
FRAME_BACKLOG_BYTES = 256 * 1024


class Outbox:
    """Messages waiting for the hub; ``len()`` is how many."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def emit(self, message_type: str, *, terminal: bool = True, **fields: Any) -> None:
        """Queue a message that must reach the hub, in order, even across a reconnect.

        When the outbox is full, token events are dropped (counted) but the end of a
        generation and placement reports are still kept: a client then gets a short text
        with a true ending rather than waiting for one that never comes.
        """
        if not terminal and len(self._queue) >= self.limit:
            self.dropped += 1
            return
        self._queue.append(protocol.encode(message_type, **fields))
        self._ready.set()

    def wake(self) -> None:
        self._ready.set()

    async def send_to(self, ws: Any) -> None:
        """Send what waits, then each message as it comes, until the socket fails."""
        while True:
            while self._queue:
                await ws.send(self._queue[0])  # a closed socket raises: it stays queued
                self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()


async def send_frame(ws: Any, text: str) -> bool:
    """One sampler frame onto the socket; False (dropped) when the socket is backed up."""
    transport = getattr(ws, "transport", None)
    if transport is not None and transport.get_write_buffer_size() > FRAME_BACKLOG_BYTES:
        return False
    from websockets.exceptions import ConnectionClosed

    # The sampler's text as it is: a frame's own type is "frame", so it is the message
    # (serialized once, on the sampler's thread; the hub passes it on unparsed).
    with contextlib.suppress(ConnectionClosed):
        await ws.send(text)
        return True
    return False


async def send_heartbeats(ws: Any, runners: Callable[[], list[Any]]) -> None:
    """A heartbeat every ``HEARTBEAT_SECONDS`` with the loaded runners, until a send fails."""
    while True:
        loaded = runners()
        await ws.send(
            protocol.encode(
                protocol.HEARTBEAT,
                loaded=[loaded_entry(r) for r in loaded],
                queue_length=sum(r.queue_length for r in loaded),
            )
        )
        await asyncio.sleep(protocol.HEARTBEAT_SECONDS)
