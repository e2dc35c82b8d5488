"""The hub's end of the agent link (/ws/agent/): a WebsocketCommunicator plays the agent against
the real ASGI application, its consumer and the fleet services, on SQLite and the in-memory
channel layer."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone

from opsdash.fleet import protocol
from opsdash.fleet import services as fleet_services
from opsdash.fleet.models import Node, NodeStatus

pytestmark = pytest.mark.django_db(transaction=True)

FACTS = {"cpu_count": 8, "memory_total_bytes": 16 * 1024**3, "gpus": []}


def new_token() -> str:
    # In embedded mode, so that no health-sweep thread starts under the test database.
    with override_settings(FLEET=False):
        _, secret = fleet_services.create_node_token(name="test", user=None)
    return secret


def approve(name: str) -> None:
    with override_settings(FLEET=True):
        fleet_services.approve_node(node=Node.objects.get(name=name), user=None)


def agent_socket() -> WebsocketCommunicator:
    """What an agent opens: no Origin header, no cookie."""
    from opsdash.asgi import application

    return WebsocketCommunicator(application, protocol.AGENT_PATH)


async def say(socket: WebsocketCommunicator, message_type: str, **fields: Any) -> None:
    await socket.send_to(text_data=protocol.encode(message_type, **fields))


async def hear(socket: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    return protocol.decode(await socket.receive_from(timeout=timeout))


async def enrolled(name: str, **identity: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    socket = agent_socket()
    connected, _ = await socket.connect()
    assert connected
    await say(socket, protocol.HELLO, name=name, version="0.1.0", facts=FACTS, **identity)
    return socket, await hear(socket)


async def test_hello_with_a_token_enrolls_a_pending_node_and_returns_its_credential_once():
    token = await database_sync_to_async(new_token)()
    socket, welcome = await enrolled("gpu01", token=token)
    assert welcome["type"] == protocol.WELCOME
    assert welcome["node"] == "gpu01"
    assert welcome["status"] == NodeStatus.PENDING
    assert welcome["approved"] is False
    assert welcome["credential"].startswith("odc_")
    assert welcome["placements"] == []
    node = await Node.objects.aget(name="gpu01")
    assert node.status == NodeStatus.PENDING
    assert (node.cpu_count, node.memory_total_bytes) == (8, 16 * 1024**3)
    assert node.connected_via  # held through this hub process's channel
    await socket.disconnect()
    node = await Node.objects.aget(name="gpu01")
    assert node.connected_via == ""

    # The credential identifies it from then on, and is not handed out again.
    again, welcome = await enrolled("gpu01", credential=welcome["credential"])
    assert welcome["type"] == protocol.WELCOME
    assert "credential" not in welcome
    await again.disconnect()


async def test_a_bad_token_is_refused_with_a_sentence_and_the_refused_close_code():
    socket = agent_socket()
    await socket.connect()
    await say(socket, protocol.HELLO, name="gpu01", facts=FACTS, token="odn_not-a-token")
    refused = await hear(socket)
    assert refused["type"] == protocol.REFUSED
    assert "create_node_token" in refused["reason"]
    assert refused["code"] == "invalid"
    closed = await socket.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_REFUSED}
    assert not await Node.objects.filter(name="gpu01").aexists()


async def test_a_wrong_credential_and_a_first_message_that_is_not_hello_are_refused():
    socket, welcome = await enrolled("gpu01", token=await database_sync_to_async(new_token)())
    await socket.disconnect()
    for first in (
        protocol.encode(protocol.HELLO, name="gpu02", credential=welcome["credential"]),
        protocol.encode(protocol.HEARTBEAT, loaded=[], queue_length=0),
        "not json",
    ):
        socket = agent_socket()
        await socket.connect()
        await socket.send_to(text_data=first)
        refused = await hear(socket)
        assert refused["type"] == protocol.REFUSED, first
        assert refused["reason"].endswith("."), refused
        assert (await socket.receive_output(timeout=2))["code"] == protocol.CLOSE_REFUSED


async def test_a_browser_origin_is_not_needed_and_the_browser_sockets_still_check_theirs():
    from opsdash.asgi import application

    # The telemetry socket without an Origin header is still denied by the origin validator.
    browser = WebsocketCommunicator(application, "/ws/telemetry/")
    connected, _ = await browser.connect()
    assert not connected
    agent = agent_socket()
    connected, _ = await agent.connect()
    assert connected
    await agent.disconnect()


async def test_channel_messages_for_the_node_are_forwarded_and_pending_nodes_get_no_work():
    socket, _ = await enrolled("gpu01", token=await database_sync_to_async(new_token)())
    layer = get_channel_layer()
    group = protocol.node_group("gpu01")
    reply_to = await layer.new_channel()

    # Pending: a generate is answered for the node, not forwarded to it.
    generate = protocol.encode(
        protocol.GENERATE, request_id="r1", reply_to=reply_to, model={}, request={}
    )
    await layer.group_send(group, {"type": "agent.send", "text": generate})
    answer = await layer.receive(reply_to)
    assert answer["event"]["code"] == "not_approved"
    assert await socket.receive_nothing(timeout=0.3)

    # Approved: the status and then the work arrive on the socket as they were sent.
    await database_sync_to_async(approve)("gpu01")
    status = await hear(socket)
    assert status["type"] == protocol.STATUS
    assert status["approved"] is True
    await layer.group_send(group, {"type": "agent.send", "text": generate})
    assert await socket.receive_from(timeout=2) == generate
    await socket.disconnect()


async def test_events_are_relayed_to_the_reply_channel_they_name():
    socket, _ = await enrolled("gpu01", token=await database_sync_to_async(new_token)())
    layer = get_channel_layer()
    reply_to = await layer.new_channel()
    for event in ({"type": "accepted"}, {"type": "token", "text": "hi"}):
        await say(socket, protocol.EVENT, request_id="r7", reply_to=reply_to, event=event)
    first, second = await layer.receive(reply_to), await layer.receive(reply_to)
    assert first == {
        "type": "agent.event",
        "request_id": "r7",
        "node": "gpu01",
        "event": {"type": "accepted"},
    }
    assert second["event"] == {"type": "token", "text": "hi"}
    await socket.disconnect()


async def test_a_heartbeat_records_what_the_node_runs_and_brings_it_back_to_healthy():
    token = await database_sync_to_async(new_token)()
    socket, _ = await enrolled("gpu01", token=token)
    await database_sync_to_async(approve)("gpu01")
    await hear(socket)  # the status
    # The node went quiet long enough to be swept offline.
    silent_since = timezone.now() - timedelta(minutes=2)
    await Node.objects.filter(name="gpu01").aupdate(
        status=NodeStatus.OFFLINE, last_seen=silent_since
    )
    loaded = [{"model": 3, "name": "tiny", "slug": "tiny", "queue_length": 1, "state": "busy"}]
    for _ in range(40):  # an agent's heartbeats, faster than every 2 s
        await say(socket, protocol.HEARTBEAT, loaded=loaded, queue_length=1)
        node = await Node.objects.aget(name="gpu01")
        if node.status == NodeStatus.HEALTHY:
            break
        await socket.receive_nothing(timeout=0.2)
    assert node.status == NodeStatus.HEALTHY
    assert node.loaded == loaded
    assert node.queue_length == 1
    assert node.last_seen > silent_since
    await socket.disconnect()


async def test_a_second_connection_of_the_node_replaces_the_first():
    token = await database_sync_to_async(new_token)()
    first, welcome = await enrolled("gpu01", token=token)
    second, _ = await enrolled("gpu01", credential=welcome["credential"])
    closed = await first.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_REPLACED}
    # Work now reaches the second socket only.
    layer = get_channel_layer()
    text = protocol.encode(protocol.STATUS, status="healthy", approved=True, draining=False)
    await layer.group_send(protocol.node_group("gpu01"), {"type": "agent.send", "text": text})
    assert json.loads(await second.receive_from(timeout=2))["status"] == "healthy"
    # The replaced socket going away does not mark the node disconnected.
    await first.disconnect()
    node = await Node.objects.aget(name="gpu01")
    assert node.connected_via
    await second.disconnect()


async def test_a_silent_socket_is_closed_after_the_hello_timeout(monkeypatch):
    from opsdash.fleet import consumers

    monkeypatch.setattr(consumers, "HELLO_TIMEOUT_SECONDS", 0.2)
    socket = agent_socket()
    await socket.connect()
    refused = await hear(socket, timeout=3)
    assert refused["type"] == protocol.REFUSED
    assert "hello" in refused["reason"]
    assert (await socket.receive_output(timeout=2))["code"] == protocol.CLOSE_REFUSED


async def test_frames_of_an_approved_node_reach_the_hub_telemetry_and_a_pending_ones_do_not(
    tmp_path,
):
    from opsdash.telemetry import fleet as telemetry_fleet
    from opsdash.telemetry import frames
    from opsdash.telemetry.sampler import Sampler
    from opsdash.telemetry.store import get_store, reset_store

    sampler = Sampler(
        tick_seconds=1, host="gpu01", models_dir=tmp_path, persist=False, runners=list
    )
    text = frames.encode(sampler.tick())  # what the agent's sampler sends, as it sends it
    reset_store()
    socket, _ = await enrolled("gpu01", token=await database_sync_to_async(new_token)())
    try:
        await socket.send_to(text_data=text)
        assert await socket.receive_nothing(timeout=0.3)
        assert get_store().latest("gpu01") is None  # pending: not shown
        await database_sync_to_async(approve)("gpu01")
        await hear(socket)
        await socket.send_to(text_data=text)
        await socket.receive_nothing(timeout=0.3)
        latest = get_store().latest("gpu01")
        assert latest is not None
        assert latest["host"] == "gpu01"
        assert latest["t"] == json.loads(text)["t"]
    finally:
        await socket.disconnect()
        telemetry_fleet.reset()
        reset_store()


async def test_placement_reports_update_the_nodes_placement():
    from opsdash.fleet.models import Placement, PlacementStatus
    from tests.factories import local_model

    socket, _ = await enrolled("gpu01", token=await database_sync_to_async(new_token)())
    await database_sync_to_async(approve)("gpu01")
    await hear(socket)
    model = await database_sync_to_async(local_model)("tiny", sha256="ab" * 32)
    node = await Node.objects.aget(name="gpu01")
    placement = await Placement.objects.acreate(model=model, node=node)
    await say(socket, protocol.PLACEMENT, model_id=model.pk, status="fetching", bytes_done=4096)
    await say(socket, protocol.PLACEMENT, model_id=model.pk, status="failed", error="Disk full.")
    deadline = 50
    while deadline:
        await placement.arefresh_from_db()
        if placement.status == PlacementStatus.FAILED:
            break
        deadline -= 1
        await socket.receive_nothing(timeout=0.1)
    assert placement.status == PlacementStatus.FAILED
    assert placement.error == "Disk full."
    assert placement.bytes_done == 4096
    await socket.disconnect()
