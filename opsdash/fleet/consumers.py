"""``/ws/agent/``: the hub's end of a node's agent link (``opsdash.fleet.protocol``).

An agent carries no session cookie and no Origin header: it is identified by its first
message alone, a ``hello`` within ``HELLO_TIMEOUT_SECONDS`` carrying a node token (enroll: the
node is created ``pending`` and its credential goes back once, in ``welcome``) or the node's
credential. Anything else is refused (``refused`` {reason, code}, then ``CLOSE_REFUSED``).

Once identified, the socket joins ``protocol.node_group(name)``, so any hub process reaches
the node through the channel layer with ``{"type": "agent.send", "text": ...}``; the newest
connection of a node wins (the older one is closed with ``CLOSE_REPLACED``). From the agent:
heartbeats (and frames, which count as one) refresh the node's row; frames go to the hub's
telemetry (``opsdash.telemetry.fleet.receive_frame``); generation events go to the channel
named in their ``reply_to``; placement reports to ``opsdash.fleet.placements``.

A pending node keeps its socket and its heartbeats are recorded, but it is given no work
(``generate``, ``place``) and its frames are not shown until an admin approves it.

Thin by design: the database work is the fleet services' (``services``, ``placements``), run
off the event loop; heartbeats are coalesced into one write at a time, so a slow database
delays a ``last_seen``, never a token on its way to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from opsdash.core.errors import Code
from opsdash.fleet import protocol

logger = logging.getLogger(__name__)

#: How long a new socket may stay silent before its hello.
HELLO_TIMEOUT_SECONDS = 10.0
#: How often the socket's hub process joins the node's group again. A restarted Redis has
#: forgotten every group (and channels_redis forgets members after a day); until the next
#: join, work for the node would reach nobody. A join is one ZADD, cheap at this pace.
REJOIN_SECONDS = 5.0
#: Work a node that is not approved must not get.
WORK = frozenset({protocol.GENERATE, protocol.PLACE})
_FRAME_PREFIX = '{"type":"frame"'

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


class AgentConsumer(AsyncWebsocketConsumer):
    node: Any = None  # the Node row once identified
    replaced = False

    async def connect(self) -> None:
        self.node = None
        self.pending = True
        self.joined_at = 0.0
        self.beat: dict[str, Any] = {}
        self.beat_task: asyncio.Task[None] | None = None
        await self.accept()
        self.hello_timer = asyncio.get_running_loop().call_later(
            HELLO_TIMEOUT_SECONDS, lambda: asyncio.ensure_future(self._no_hello())
        )

    async def _no_hello(self) -> None:
        if self.node is None:
            # The socket may be gone already (an agent that redialed): nothing left to tell.
            with contextlib.suppress(Exception):
                await self._refuse(
                    f"No hello within {HELLO_TIMEOUT_SECONDS:g} s: an agent's first message is "
                    "its hello (manage.py agent).",
                    Code.INVALID,
                )

    async def disconnect(self, code: int) -> None:
        timer = getattr(self, "hello_timer", None)
        if timer is not None:
            timer.cancel()
        node = self.node
        if node is None:
            return
        self.node = None
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(
                protocol.node_group(node.name), self.channel_name
            )
        if self.beat_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.beat_task), 5)
        if not self.replaced:
            from opsdash.fleet.services import mark_disconnected

            with contextlib.suppress(Exception):
                await database_sync_to_async(mark_disconnected)(
                    node=node, connected_via=self.channel_name
                )
            forget = _telemetry("forget_node")
            if forget is not None:
                with contextlib.suppress(Exception):
                    forget(node.name)

    # --- from the agent -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return
        if self.node is not None and text_data.startswith(_FRAME_PREFIX):
            await self._frame(text_data)  # the hot path: passed on unparsed
            return
        try:
            message = protocol.decode(text_data)
        except ValueError:
            if self.node is None:
                await self._refuse("The first message must be a JSON hello.", Code.INVALID)
            else:
                logger.warning("node %s sent a message that is not JSON; ignored", self.node.name)
            return
        kind = message["type"]
        if self.node is None:
            if kind != protocol.HELLO:
                await self._refuse(
                    f"The first message must be a hello, not {kind!r}.", Code.INVALID
                )
                return
            await self._hello(message)
        elif kind == protocol.HEARTBEAT:
            self._queue_beat(loaded=message.get("loaded"), queue_length=message.get("queue_length"))
        elif kind == protocol.FRAME:  # the {"type": "frame", "frame": {...}} wrapper
            await self._frame(text_data)
        elif kind == protocol.EVENT:
            await self._event(message)
        elif kind == protocol.PLACEMENT:
            await self._placement(message)
        elif kind == protocol.INSTALLED:
            await self._installed(message)
        else:
            logger.debug("node %s sent a %s message; ignored", self.node.name, kind)

    async def _hello(self, message: dict[str, Any]) -> None:
        from opsdash.fleet.services import NodeRefused, authenticate_node, register_node

        self.hello_timer.cancel()
        name, facts = str(message.get("name") or ""), message.get("facts")
        version = str(message.get("version") or "")
        client = self.scope.get("client") or ("", 0)
        address = str(client[0] or "")
        token, credential = message.get("token"), message.get("credential")
        new_credential = ""
        try:
            if isinstance(credential, str) and credential:
                node = await database_sync_to_async(authenticate_node)(
                    name=name, credential=credential, facts=facts, version=version, address=address
                )
            elif isinstance(token, str) and token:
                node, new_credential = await database_sync_to_async(register_node)(
                    name=name, token_secret=token, facts=facts, version=version, address=address
                )
            else:
                await self._refuse(
                    "A hello carries a node token (to enroll) or the node's credential.",
                    Code.INVALID,
                )
                return
        except NodeRefused as exc:
            await self._refuse(exc.reason, str(exc.code))
            return
        group = protocol.node_group(node.name)
        # Newest wins: an agent that redials before the hub noticed its old socket is gone
        # must not be locked out by it.
        await self.channel_layer.group_send(
            group, {"type": "agent.replaced", "by": self.channel_name}
        )
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined_at = time.monotonic()
        self.node = node
        welcome = await database_sync_to_async(_welcome)(node, self.channel_name)
        self.pending = not welcome["approved"]
        if new_credential:
            welcome["credential"] = new_credential
        await self.send(text_data=protocol.encode(protocol.WELCOME, **welcome))

    def _queue_beat(self, **fields: Any) -> None:
        """Coalesce: one heartbeat write at a time, the latest figures win."""
        self.beat.update({k: v for k, v in fields.items() if v is not None})
        if self.beat_task is None or self.beat_task.done():
            self.beat_task = asyncio.ensure_future(self._write_beats())

    async def _write_beats(self) -> None:
        from opsdash.fleet.services import NodeRefused, record_heartbeat

        while self.node is not None:
            fields, self.beat = self.beat, {}
            loaded = fields.get("loaded")
            queue_length = fields.get("queue_length")
            try:
                node = await database_sync_to_async(record_heartbeat)(
                    node=self.node,
                    loaded=loaded if isinstance(loaded, list) else None,
                    queue_length=queue_length if isinstance(queue_length, int) else None,
                    connected_via=self.channel_name,
                )
            except NodeRefused as exc:  # deleted under its socket
                await self._refuse(exc.reason, str(exc.code))
                return
            except Exception:
                logger.warning("recording a heartbeat of %s failed", self.node.name, exc_info=True)
                return
            self.pending = node.approved_at is None
            if time.monotonic() - self.joined_at > REJOIN_SECONDS:
                try:
                    await self.channel_layer.group_add(
                        protocol.node_group(node.name), self.channel_name
                    )
                    self.joined_at = time.monotonic()
                except Exception:  # Redis is away: the next heartbeat tries again
                    logger.warning("node %s could not rejoin its group", node.name, exc_info=True)
            if not self.beat:
                return

    async def _frame(self, text: str) -> None:
        self._queue_beat()  # a frame is a sign of life too (the service limits the writes)
        if self.pending:
            return  # not shown until approved
        receive_frame = _telemetry("receive_frame")
        if receive_frame is not None:
            await receive_frame(self.node.name, text)

    async def _event(self, message: dict[str, Any]) -> None:
        reply_to, event = message.get("reply_to"), message.get("event")
        if not isinstance(reply_to, str) or not isinstance(event, dict):
            logger.warning("node %s sent an event without reply_to or event", self.node.name)
            return
        relay = {
            "type": "agent.event",
            "request_id": message.get("request_id"),
            "node": self.node.name,  # so the waiting process can tell who answered
            "event": event,
        }
        try:
            await self.channel_layer.send(reply_to, relay)
        except Exception as exc:  # a full or vanished reply channel: that request is gone
            logger.info("event for %s from node %s not relayed: %s", reply_to, self.node.name, exc)

    async def _placement(self, message: dict[str, Any]) -> None:
        from opsdash.fleet.placements import record_placement

        try:
            await database_sync_to_async(record_placement)(
                node=self.node,
                model_id=message.get("model_id"),
                status=str(message.get("status") or ""),
                error=str(message.get("error") or ""),
                bytes_done=message.get("bytes_done"),  # None: keep what was recorded
            )
        except Exception:
            logger.warning(
                "recording a placement report of %s failed", self.node.name, exc_info=True
            )

    async def _installed(self, message: dict[str, Any]) -> None:
        from opsdash.fleet.agent_installs import record_installed

        try:
            await database_sync_to_async(record_installed)(
                node=self.node,
                model_id=message.get("model_id"),
                status=str(message.get("status") or ""),
                error=str(message.get("error") or ""),
                metadata=message.get("metadata"),
            )
        except Exception:
            logger.warning(
                "recording an install report of %s failed", self.node.name, exc_info=True
            )

    # --- from the channel layer ---------------------------------------------------------------

    async def agent_send(self, message: dict[str, Any]) -> None:
        """A hub process's message for this node: forwarded as it is, except work for a node
        not yet approved (a ``generate`` gets its error at once, so its caller moves on)."""
        text = message["text"]
        try:
            outgoing = protocol.decode(text)
        except ValueError:
            return
        kind = outgoing["type"]
        if kind == protocol.STATUS:
            approved = outgoing.get("approved")
            if isinstance(approved, bool):
                self.pending = not approved
                if self.node is not None and approved != (self.node.approved_at is not None):
                    # The cached row too: heartbeats re-read it only every few seconds, and
                    # until then they would set ``pending`` back from its stale approved_at.
                    self.node.approved_at = timezone.now() if approved else None
        elif kind in WORK and self.pending:
            if kind == protocol.GENERATE and isinstance(outgoing.get("reply_to"), str):
                await self._event(
                    {
                        "reply_to": outgoing["reply_to"],
                        "request_id": outgoing.get("request_id"),
                        "event": {
                            "type": "error",
                            "code": "not_approved",
                            "reason": f"Node {self.node.name} is waiting for an admin's approval.",
                        },
                    }
                )
            return
        await self.send(text_data=text)

    async def agent_replaced(self, message: dict[str, Any]) -> None:
        if message.get("by") == self.channel_name or self.node is None:
            return
        self.replaced = True
        await self.close(code=protocol.CLOSE_REPLACED)

    # --- helpers ------------------------------------------------------------------------------

    async def _refuse(self, reason: str, code: str) -> None:
        with contextlib.suppress(Exception):
            await self.send(text_data=protocol.encode(protocol.REFUSED, reason=reason, code=code))
        await self.close(code=protocol.CLOSE_REFUSED)


def _welcome(node: Any, channel_name: str) -> dict[str, Any]:
    """``welcome``'s fields: the node's desired state and its placements; its row marked as
    held through this process's channel."""
    from opsdash.fleet.services import record_heartbeat, status_message

    node = record_heartbeat(node=node, connected_via=channel_name)
    welcome: dict[str, Any] = {"node": node.name, **status_message(node)}
    try:
        from opsdash.fleet.placements import placement_specs

        welcome["placements"] = placement_specs(node=node)
    except Exception:
        # Without the list the agent keeps what it holds (it deletes only what a list omits).
        logger.warning("could not list the placements of %s", node.name, exc_info=True)
    return welcome


def _telemetry(name: str) -> Any:
    """``opsdash.telemetry.fleet``'s function ``name``, or None (said once) without it."""
    try:
        from opsdash.telemetry import fleet
    except ImportError:
        _warn_once("telemetry", "opsdash.telemetry.fleet is missing: node frames are dropped")
        return None
    return getattr(fleet, name, None)
