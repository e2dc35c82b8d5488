"""Nodes enrolled through the fleet's own services, for the placement and file tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings

from opsdash.fleet import protocol
from opsdash.fleet import services as fleet_services
from opsdash.fleet.models import Node


@dataclass(frozen=True)
class Enrolled:
    node: Node
    credential: str


def enroll(name: str, *, approve: bool = True, connected_via: str = "") -> Enrolled:
    """A node registered with a fresh node token, approved by the system unless ``approve`` is
    false, and shown as connected through ``connected_via`` (a hub channel name) if given."""
    # Enrolled as in embedded mode, so no health-sweep thread starts under the test database.
    with override_settings(FLEET=False):
        _, secret = fleet_services.create_node_token(name=f"for {name}", user=None)
        node, credential = fleet_services.register_node(name=name, token_secret=secret)
    if approve:
        with override_settings(FLEET=True):
            node = fleet_services.approve_node(node=node, user=None)
    if connected_via:
        node = fleet_services.record_heartbeat(node=node, connected_via=connected_via)
    node.refresh_from_db()
    return Enrolled(node=node, credential=credential)


def listen(node: Node) -> str:
    """A channel in ``node``'s group: what the hub process holding its socket would receive."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(protocol.node_group(node.name), channel)
    return channel


def _next(channel: str, timeout: float) -> dict[str, Any] | None:
    layer = get_channel_layer()

    async def receive() -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        except TimeoutError:
            return None

    return async_to_sync(receive)()


def received(channel: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next agent-link message sent to ``channel``, decoded."""
    message = _next(channel, timeout)
    assert message is not None, f"nothing reached {channel} in {timeout} s"
    assert message["type"] == "agent.send", message
    return protocol.decode(message["text"])


def nothing_received(channel: str, timeout: float = 0.2) -> bool:
    return _next(channel, timeout) is None
