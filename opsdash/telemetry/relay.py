"""Each web process's one member of the ``telemetry`` group, per event loop: the ``Relay``.

It hands every frame to the telemetry websockets of its process (``consumers``) and, in fleet
mode, keeps it in the process's fleet store (``store``), so every hub process knows every node's
latest frame and 15 minutes whichever process holds the node's socket.

Why one member per process rather than each socket in the group: joining every socket costs one
channel-layer delivery per socket per tick, and the in-memory layer scans all its channels on
each receive: with 200 pages open that alone took tens of milliseconds a tick.

A frame message is ``{"type": "telemetry.frame", "host", "text"}``, plus ``t``, ``lite`` (the
light frame's text, ``frames.lite``) and ``card`` (``frames.card``, what a page's node card
needs) when the sender has them: a hub that got the frame from an agent parsed it once
already, so the other processes need not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Protocol

from channels.layers import (
    DEFAULT_CHANNEL_LAYER,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from django.conf import settings

from opsdash.telemetry.frames import GROUP
from opsdash.telemetry.store import get_store

logger = logging.getLogger(__name__)

REJOIN_SECONDS = 3600  # channels_redis forgets group members after a day
RETRY_SECONDS = 1.0


class FrameSocket(Protocol):
    async def offer(self, host: str, text: str, card: str | None = None) -> None: ...


class Relay:
    """This process's member of the ``telemetry`` group, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: set[FrameSocket] = set()
        self.task: asyncio.Task[None] | None = None
        self.joined = asyncio.Event()

    def start(self) -> None:
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        layer = _layer_for_relay()
        channel = await layer.new_channel()
        try:
            while True:
                try:
                    await self._listen(layer, channel)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    # Redis restarted or unreachable: join again once it answers (a restarted
                    # Redis has forgotten every group), so pages and the store resume by
                    # themselves.
                    logger.warning("telemetry relay lost the channel layer (%s); rejoining", exc)
                    await asyncio.sleep(RETRY_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(GROUP, channel)

    async def _listen(self, layer: Any, channel: str) -> None:
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

    async def _deliver(self, message: dict[str, Any]) -> None:
        host, text = message.get("host", ""), message["text"]
        if not settings.TELEMETRY_EMBEDDED:
            try:
                get_store().put(host, text, t=message.get("t"), lite=message.get("lite"))
            except (ValueError, KeyError, TypeError):
                logger.warning("a telemetry frame of %r could not be read; dropped", host)
                return
        for socket in list(self.sockets):
            try:
                await socket.offer(host, text, message.get("card"))
            except Exception:  # one broken socket must not starve the others
                logger.exception("telemetry frame to one socket failed")


def _layer_for_relay() -> Any:
    """The channel layer a relay receives on: a private instance of the configured one.

    channels-redis lets one layer instance receive on one event loop at a time ("Two event
    loops are trying to receive() on one channel layer at once!"), and the process's shared
    instance is already receiving on the server's loop (the agent link, replies to routed
    runs). The in-memory layer is the exception: its groups live in the instance, so a private
    one would hear nothing.
    """
    layer = get_channel_layer()
    assert layer is not None
    if isinstance(layer, InMemoryChannelLayer):
        return layer
    return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)


_relays: dict[asyncio.AbstractEventLoop, Relay] = {}


async def relay_for_this_loop() -> Relay:
    """The relay of the running loop, started (and joined to the group) on first use."""
    loop = asyncio.get_running_loop()
    for old in [r for r in _relays.values() if r.loop.is_closed()]:
        _relays.pop(old.loop, None)
    relay = _relays.get(loop)
    if relay is None or relay.task is None or relay.task.done():
        relay = _relays[loop] = Relay(loop)
        relay.start()
    await relay.joined.wait()
    return relay


def stop_relays() -> None:
    """Cancel every relay (the background service's stop; tests)."""
    for relay in list(_relays.values()):
        if relay.task is not None and not relay.loop.is_closed():
            relay.loop.call_soon_threadsafe(relay.task.cancel)
    _relays.clear()


class Listener:
    """In fleet mode, a relay of its own on a thread of its own, from the first read on: a hub
    process that holds no node and serves no telemetry page still knows every node's figures
    when ``/metrics`` or the snapshot API asks.

    Not with the in-memory channel layer: its queues belong to one event loop, and there every
    frame comes from this very process (``fleet.receive_frame`` stores it directly)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._main, name="opsdash-telemetry-listener", daemon=True
        )
        self.thread.start()
        self.ready.wait(timeout=5)

    def _main(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen())
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def _listen(self) -> None:
        relay = Relay(asyncio.get_running_loop())
        relay.start()
        assert relay.task is not None
        await relay.joined.wait()
        self.ready.set()
        await relay.task

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            for task in asyncio.all_tasks(loop):
                loop.call_soon_threadsafe(task.cancel)
        if self.thread is not None:
            self.thread.join(timeout=5)


_listener: Listener | None = None
_listener_lock = threading.Lock()


def start_listener() -> bool:
    """Start this process's listener (fleet mode with a shared channel layer; else nothing).
    True when it started one now (the caller may wait for the first frames)."""
    global _listener
    layer = get_channel_layer()
    if settings.TELEMETRY_EMBEDDED or layer is None or isinstance(layer, InMemoryChannelLayer):
        return False
    with _listener_lock:
        if _listener is not None and _listener.thread is not None and _listener.thread.is_alive():
            return False
        _listener = Listener()
        _listener.start()
        return True


def stop_listener() -> None:
    global _listener
    with _listener_lock:
        current, _listener = _listener, None
    if current is not None:
        current.stop()
    stop_relays()


def reset_after_fork() -> None:
    global _listener, _listener_lock
    _listener, _listener_lock = None, threading.Lock()
    _relays.clear()
