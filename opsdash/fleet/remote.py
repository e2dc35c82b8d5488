"""Generation on a fleet node: the hub side of ``generate`` over the agent link.

``generate`` yields the same events the local supervisor does (``{"type": "token", "text"}``…,
then one ``done`` with the node's usage and timings), so the run path treats a node like a
local runner. How a request travels: the hub process running the request opens a reply channel
of its own, sends ``generate`` to the channel-layer group of the chosen node
(``protocol.node_group``: the hub process holding that node's socket forwards it), and reads the
node's events from the reply channel, whichever hub process relays them.

Failures and what they cost:

- No node accepts within ``ACCEPT_TIMEOUT_SECONDS`` (its socket is gone, its hub process died),
  or the node answers an error before ``accepted`` (it does not hold the model any more): the
  request had not started, so it goes to the next node in ``routable_nodes`` order with a new
  request id (a late ``accepted`` from the first node is then cancelled, not generated twice).
  When every node stayed silent, they are tried again after a pause (``SILENT_ROUNDS``): a
  link redialed after a Redis or hub restart is back within a second or two.
- The node's ``last_seen`` goes stale (``NODE_UNHEALTHY_SECONDS``) after ``accepted``: it is
  lost with the request on it; ``NodeLost`` (code ``node_lost``), the text so far kept by the
  caller. Retrying elsewhere would repeat text the client may already have.
- No node at all: ``NoNode`` (code ``no_node``, 503 ``model_not_loaded``), naming why
  (``scheduler.why_unroutable``).
- An ``error`` event after ``accepted``: ``InferenceError`` with the node's code and sentence
  (``busy`` answers 429 as a local queue would).

A caller's cancel (``cancel_event``) sends ``cancel`` to the node and keeps reading until its
``done`` (finish_reason ``cancelled``, with the counts so far). ``interrupt()`` (the server's
shutdown) ends every generation of this process at once with the supervisor's ``SHUT_DOWN``
code, so the run path records them ``interrupted`` as it does for local runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.utils import timezone

from inference.errors import InferenceError
from inference.runtime.pool import SHUT_DOWN
from inference.runtime.protocol import done_before_start
from opsdash.core.errors import Code
from opsdash.fleet import protocol
from opsdash.fleet.models import Node
from opsdash.fleet.scheduler import routable_nodes, why_unroutable

logger = logging.getLogger(__name__)

#: How often a generation with no news checks that its node is still heard from.
LIVENESS_CHECK_SECONDS = 1.0
#: When every node tried stayed silent, the nodes are tried again after a pause, this many
#: rounds in all (a link redialed after a Redis or hub restart takes a second or two).
SILENT_ROUNDS = 3
SILENT_PAUSE_SECONDS = 1.0
#: How long a cancelled or abandoned generation waits for the node's final event.
CANCEL_GRACE_SECONDS = 10.0

OnNode = Callable[[str], Awaitable[None]]


class NoNode(InferenceError):
    """No node can serve the model (``reason`` says why); 503 ``model_not_loaded``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code=Code.NO_NODE)


class NodeLost(InferenceError):
    """The node stopped answering during the generation; the text so far is kept.

    ``completion_tokens`` counts the token events that reached the hub (the node emits one per
    generated token), so the ledger still says how much was generated; the node's own count
    and timings went down with it.
    """

    def __init__(self, node: str, *, completion_tokens: int | None = None) -> None:
        super().__init__(
            f"node lost: {node} stopped answering during the generation; the text so far is kept.",
            code=Code.NODE_LOST,
        )
        self.node = node
        self.completion_tokens = completion_tokens


class _Interrupted(Exception):
    """This process is shutting down (``interrupt()``)."""


_interrupted = False
_active: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def interrupt() -> None:
    """End every remote generation of this process now (the first step of a shutdown): each
    raises ``SHUT_DOWN``, and its node is told to cancel. Takes no lock and does not wait, so
    a signal handler may call it."""
    global _interrupted
    _interrupted = True
    for loop, event in list(_active):
        with contextlib.suppress(RuntimeError):  # that loop is closed: nothing left to end
            loop.call_soon_threadsafe(event.set)


def shutting_down() -> bool:
    return _interrupted


def reset() -> None:
    """Forget an earlier ``interrupt()`` (a test, or a forked child, starts serving again)."""
    global _interrupted
    _interrupted = False


def _last_seen(name: str) -> datetime | None:
    return Node.objects.filter(name=name).values_list("last_seen", flat=True).first()


class _Link:
    """One generation's reply channel: every event for it, in order, by request id."""

    def __init__(self, layer: BaseChannelLayer, reply: str) -> None:
        self.layer = layer
        self.reply = reply
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # One receiver for the generation's lifetime rather than a receive() per wait: a
        # receive cancelled by a timeout could drop the message it was taking.
        self._receiver = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        while True:
            message = await self.layer.receive(self.reply)
            if message.get("type") == "agent.event" and isinstance(message.get("event"), dict):
                self.events.put_nowait(message)

    async def send(self, node: str, message_type: str, **fields: Any) -> None:
        text = protocol.encode(message_type, **fields)
        await self.layer.group_send(protocol.node_group(node), {"type": "agent.send", "text": text})

    async def next_event(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The next event of ``request_id`` within ``timeout`` seconds, else None; events of
        other (abandoned) request ids are dropped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                return None
            if message.get("request_id") == request_id:
                event: dict[str, Any] = message["event"]
                return event
        return None

    def close(self) -> None:
        self._receiver.cancel()


def _node_error(event: dict[str, Any], node: str) -> InferenceError:
    reason = str(event.get("reason") or f"The node {node} could not run this request.")
    code = event.get("code")
    if code == SHUT_DOWN:  # the agent is stopping: for this hub, the node is going away
        return NodeLost(node)
    return InferenceError(reason, code=str(code) if code else None)


async def generate(
    *,
    model_id: int,
    spec: dict[str, Any],
    request: dict[str, Any],
    cancel_event: asyncio.Event | None = None,
    on_node: OnNode | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Stream the events of ``request`` (``{prompt?, messages?, params, priority?}``) for the
    model of ``spec`` (a PlacementSpec) from a node that can serve it (the module docstring
    says how nodes are tried and how each failure ends). The node's agent generates at the
    request's ``priority`` ("interactive" or "batch"). ``on_node`` is awaited with the node's
    name as soon as a node has accepted the request, before any of its text."""
    layer = get_channel_layer()
    if layer is None:
        raise NoNode("Fleet mode needs a channel layer (OPSDASH_REDIS_URL) to reach the nodes.")
    if _interrupted:
        raise InferenceError("The server is shutting down.", code=SHUT_DOWN)
    candidates = await sync_to_async(routable_nodes)(model_id=model_id)
    if not candidates:
        raise NoNode(await sync_to_async(why_unroutable)(model_id=model_id))
    stop = asyncio.Event()
    entry = (asyncio.get_running_loop(), stop)
    _active.add(entry)
    # The default prefix, like every consumer's channel: channels-redis pops all the channels
    # of one prefix with one BLPOP, but a channel of another prefix waits for that BLPOP's
    # lock (up to its 5 s timeout per holder) and so missed the node's `accepted`.
    link = _Link(layer, await layer.new_channel())
    try:
        async for event in _serve(link, candidates, spec, request, cancel_event, on_node, stop):
            yield event
    except _Interrupted:
        raise InferenceError("The server is shutting down.", code=SHUT_DOWN) from None
    finally:
        _active.discard(entry)
        link.close()


async def _serve(
    link: _Link,
    candidates: list[Node],
    spec: dict[str, Any],
    request: dict[str, Any],
    cancel_event: asyncio.Event | None,
    on_node: OnNode | None,
    stop: asyncio.Event,
) -> AsyncIterator[dict[str, Any]]:
    refusals: list[str] = []
    last_error: InferenceError | None = None
    silent = 0  # nodes that did not answer at all
    queue, rounds, answered = list(candidates), 1, False
    while queue or (not answered and rounds < SILENT_ROUNDS):
        if not queue:
            # Every node tried was silent: most likely a link being redialed (a Redis or hub
            # restart of a second or two; the node is still healthy, but no hub process holds
            # its group for a moment). A request that waits a little then runs, where a 503
            # would reach the client.
            rounds += 1
            await asyncio.sleep(SILENT_PAUSE_SECONDS)
            queue = await sync_to_async(routable_nodes)(model_id=int(spec["model_id"]))
            continue
        node = queue.pop(0)
        if cancel_event is not None and cancel_event.is_set():
            # Stopped before a node ran it: the runtime's cancelled done, without counts (a
            # plain dict, like every event this module yields).
            yield {**done_before_start()}
            return
        request_id = uuid.uuid4().hex
        fields = {"request_id": request_id, "reply_to": link.reply, "model": spec}
        await link.send(node.name, protocol.GENERATE, **fields, request=request)
        first = await _wait(link, request_id, protocol.ACCEPT_TIMEOUT_SECONDS, cancel_event, stop)
        if first is None or first.get("type") != "accepted":
            # Not started there: make sure it never starts late, then try the next node.
            with contextlib.suppress(Exception):
                await link.send(node.name, protocol.CANCEL, request_id=request_id)
            if stop.is_set():
                raise _Interrupted
            if cancel_event is not None and cancel_event.is_set():
                yield {**done_before_start()}
                return
            if first is None:
                silent += 1
                refusals.append(
                    f"{node.name} did not accept it within {protocol.ACCEPT_TIMEOUT_SECONDS:g} s"
                )
            else:
                answered = True
                last_error = _node_error(first, node.name)
                refusals.append(f"{node.name} refused it ({last_error.reason.rstrip('.')})")
            logger.info("fleet: %s did not take request %s; trying the next node", node, request_id)
            continue
        if on_node is not None:
            await on_node(node.name)
        async for event in _stream(link, node.name, request_id, cancel_event, stop):
            yield event
        return
    if last_error is not None and not silent:
        raise last_error  # every node said why: the last one's code (busy: 429) and sentence
    raise NoNode(
        f"No node took the request for “{spec.get('name', spec.get('model_id'))}”: "
        + "; ".join(refusals)
        + "."
    )


async def _wait(
    link: _Link,
    request_id: str,
    timeout: float,
    cancel_event: asyncio.Event | None,
    stop: asyncio.Event,
) -> dict[str, Any] | None:
    """The next event, or None on timeout, a caller's cancel or an interrupt (whichever is
    first; the caller tells them apart by the two events)."""
    receiving = asyncio.ensure_future(link.next_event(request_id, timeout))
    signals = [asyncio.ensure_future(stop.wait())]
    if cancel_event is not None:
        signals.append(asyncio.ensure_future(cancel_event.wait()))
    try:
        await asyncio.wait([receiving, *signals], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signal in signals:
            signal.cancel()
    if not receiving.done():
        receiving.cancel()
        return None
    return receiving.result()


async def _stream(
    link: _Link,
    node: str,
    request_id: str,
    cancel_event: asyncio.Event | None,
    stop: asyncio.Event,
) -> AsyncIterator[dict[str, Any]]:
    """The accepted generation's events until its ``done`` (or its error, or its node's loss)."""
    cancel_sent: float | None = None  # when the caller's cancel went to the node
    finished = False
    streamed = 0  # token events yielded
    try:
        while True:
            if cancel_event is not None and cancel_event.is_set() and cancel_sent is None:
                await link.send(node, protocol.CANCEL, request_id=request_id)
                cancel_sent = time.monotonic()
            watch = None if cancel_sent is not None else cancel_event
            event = await _wait(link, request_id, LIVENESS_CHECK_SECONDS, watch, stop)
            if stop.is_set():
                raise _Interrupted
            if event is None:
                if cancel_sent is None:
                    if cancel_event is not None and cancel_event.is_set():
                        continue  # woken by the cancel: send it at the top of the loop
                    # Silence for a second: is the node still heard from? (A steady stream
                    # of events proves it is, so last_seen is only read while none arrive.)
                    if not await _alive(node):
                        raise NodeLost(node, completion_tokens=streamed)
                elif time.monotonic() - cancel_sent > CANCEL_GRACE_SECONDS or not (
                    await _alive(node)
                ):
                    # The caller stopped it and the node is gone or silent: it ends as the
                    # caller asked (cancelled), without the node's counts.
                    finished = True
                    yield {**done_before_start()}
                    return
                continue
            kind = event.get("type")
            if kind == "token":
                text = event.get("text")
                if isinstance(text, str) and text:
                    streamed += 1
                    yield {"type": "token", "text": text}
            elif kind == "done":
                finished = True
                yield {**event, "node": node}
                return
            elif kind == "error":
                finished = True
                raise _node_error(event, node)
    finally:
        if not finished and cancel_sent is None:
            # Abandoned (the caller went away, the node was lost, the server is stopping):
            # the node should stop generating for nobody.
            with contextlib.suppress(Exception):
                await link.send(node, protocol.CANCEL, request_id=request_id)


async def _alive(node: str) -> bool:
    """Whether ``node`` was heard from within ``NODE_UNHEALTHY_SECONDS``."""
    last_seen = await sync_to_async(_last_seen)(node)
    limit = timedelta(seconds=settings.NODE_UNHEALTHY_SECONDS)
    return last_seen is not None and timezone.now() - last_seen <= limit
