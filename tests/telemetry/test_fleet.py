"""Fleet telemetry on a hub: every node's frames through ``receive_frame`` and the telemetry
group, to the pages, the snapshot API, history and /metrics; per-node rollups and alerts.

The frames are real ones (a real sampler's tick, with the fake NVML's one GPU), given the
nodes' names; the channel layer is the in-memory one (the fleet process tests run Redis).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from prometheus_client.parser import text_string_to_metric_families

from opsdash.telemetry import fleet, frames
from opsdash.telemetry.models import AlertEpisode, AlertRule, MinuteFigures
from opsdash.telemetry.relay import relay_for_this_loop
from opsdash.telemetry.store import FleetStore, get_store, reset_store
from tests.fixtures.personas import client_for
from tests.fixtures.websockets import ws_as
from tests.telemetry.conftest import telemetry_socket
from tests.telemetry.nodes import node_frame

pytestmark = pytest.mark.django_db(transaction=True)

ACK = {"type": "ack"}


@pytest.fixture(autouse=True)
def hub(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """This process is a hub: no sampler of its own, every node's frames from the group."""
    settings.TELEMETRY_EMBEDDED = False
    reset_store()
    fleet.reset()
    yield
    fleet.drain()
    fleet.reset()
    reset_store()


def frame_of(host: str, t: int, **changes: Any) -> str:
    """A real frame's JSON, of ``host`` at ``t`` (epoch ms), with ``changes`` applied."""
    return frames.encode(node_frame(host, t, **changes))


def now_ms() -> int:
    return int(time.time() * 1000)


async def received(ws) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return json.loads(await ws.receive_from(timeout=3))


async def test_a_page_gets_every_nodes_frames_and_the_latest_of_each_wins(operator):
    ws = await telemetry_socket(operator)
    assert (await ws.connect())[0]
    t = now_ms()

    await fleet.receive_frame("node-a", frame_of("node-a", t))
    first = await received(ws)  # sent at once; the next ones wait for its ack
    await fleet.receive_frame("node-b", frame_of("node-b", t))
    await fleet.receive_frame("node-a", frame_of("node-a", t + 1000))
    await fleet.receive_frame("node-a", frame_of("node-a", t + 2000))
    await fleet.receive_frame("node-b", frame_of("node-b", t + 1000))
    await ws.send_json_to(ACK)
    second = await received(ws)
    await ws.send_json_to(ACK)
    assert await ws.receive_nothing(timeout=0.3)
    await fleet.receive_frame("node-b", frame_of("node-b", t + 2000))
    third = await received(ws)
    await ws.send_json_to(ACK)
    await ws.disconnect()

    assert first["type"] == "frame" and (first["host"], first["t"]) == ("node-a", t)
    # What waited for the ack comes in one message: each host's latest, node-b's not dropped
    # because node-a's came after it.
    assert second["type"] == "frames"
    assert [(f["host"], f["t"]) for f in second["frames"]] == [
        ("node-b", t + 1000),
        ("node-a", t + 2000),
    ]
    assert third["type"] == "frame" and (third["host"], third["t"]) == ("node-b", t + 2000)
    assert "percent" in second["frames"][0]["cpu"], "a page without a focus gets full frames"


async def test_a_page_gets_the_node_it_shows_in_full_and_the_others_as_cards(operator):
    ws = await ws_as(operator, "/ws/telemetry/?focus=node-a")
    assert (await ws.connect())[0]
    t = now_ms()

    await fleet.receive_frame("node-b", frame_of("node-b", t))
    card = await received(ws)
    await ws.send_json_to(ACK)
    await fleet.receive_frame("node-a", frame_of("node-a", t))
    full = await received(ws)
    await ws.disconnect()

    assert (card["host"], full["host"]) == ("node-b", "node-a")
    assert "percent" in full["cpu"], "the focused node in full"
    assert "percent" not in card["cpu"], "a card has no per-core detail"
    assert card["runners"] == [] and card["alerts"] == [] and card["memory"] == full["memory"]


async def test_a_node_cannot_speak_for_another(operator):
    ws = await telemetry_socket(operator)
    assert (await ws.connect())[0]

    await fleet.receive_frame("node-b", frame_of("node-a", now_ms()))
    frame = await received(ws)
    await ws.disconnect()

    assert frame["host"] == "node-b"
    assert get_store().live_hosts() == ["node-b"]


async def test_a_page_opened_later_gets_each_nodes_history_and_host_limits_it_to_one(operator):
    t = now_ms() - 200_000
    for i in range(200):  # 200 s of node-a, 3 s of node-b
        await fleet.receive_frame("node-a", frame_of("node-a", t + i * 1000))
    for i in range(3):
        await fleet.receive_frame("node-b", frame_of("node-b", t + 197_000 + i * 1000))

    everyone = await telemetry_socket(operator)
    assert (await everyone.connect())[0]
    histories = {}
    for _ in range(2):
        message = await received(everyone)
        await everyone.send_json_to(ACK)
        histories[message["host"]] = message
    focused = await ws_as(operator, "/ws/telemetry/?focus=node-b")
    assert (await focused.connect())[0]
    short = {}
    for _ in range(2):
        message = await received(focused)
        await focused.send_json_to(ACK)
        short[message["host"]] = message
    only_b = await ws_as(operator, "/ws/telemetry/?host=node-b")
    assert (await only_b.connect())[0]
    b_history = await received(only_b)
    await only_b.send_json_to(ACK)
    await fleet.receive_frame("node-a", frame_of("node-a", t + 201_000))
    await fleet.receive_frame("node-b", frame_of("node-b", t + 201_000))
    b_frame = await received(only_b)
    for ws in (everyone, focused, only_b):
        await ws.disconnect()

    assert {h: len(m["frames"]) for h, m in histories.items()} == {"node-a": 200, "node-b": 3}
    assert all(m["type"] == "history" for m in histories.values())
    assert "percent" not in histories["node-a"]["frames"][0]["cpu"], "history keeps light frames"
    # The focused node in full, the others' last two minutes only (small multiples).
    assert len(short["node-b"]["frames"]) == 3
    assert 118 <= len(short["node-a"]["frames"]) <= 121
    assert b_history["host"] == "node-b" and len(b_history["frames"]) == 3
    assert (b_frame["host"], b_frame["t"]) == ("node-b", t + 201_000), "no node-a frame"


async def test_each_hub_process_keeps_the_frames_other_processes_send_to_the_group():
    await relay_for_this_loop()  # this process's member of the telemetry group
    layer = get_channel_layer()
    t = now_ms()

    # As another hub process holding node-c sends them (without the light copy).
    for i in range(5):
        text = frame_of("node-c", t + i * 1000)
        await layer.group_send(
            frames.GROUP, {"type": "telemetry.frame", "host": "node-c", "text": text}
        )
    store = get_store()
    deadline = time.monotonic() + 3
    while len(store.history_frames("node-c")) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)

    ring = [json.loads(text) for text in store.history_frames("node-c")]
    assert [f["t"] for f in ring] == [t + i * 1000 for i in range(5)]
    latest = store.latest("node-c")
    assert latest is not None and latest["t"] == t + 4000 and latest["cpu"]["percent"]


def test_the_snapshot_names_its_node_and_says_which_nodes_there_are(operator):
    client = client_for(operator)
    assert client.get("/api/telemetry/snapshot").status_code == 503  # nobody sends yet

    async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", now_ms()))
    alone = client.get("/api/telemetry/snapshot")
    async_to_sync(fleet.receive_frame)("node-b", frame_of("node-b", now_ms()))
    ambiguous = client.get("/api/telemetry/snapshot")
    b = client.get("/api/telemetry/snapshot?host=node-b")
    unknown = client.get("/api/telemetry/snapshot?host=node-z")
    every = client.get("/api/telemetry/snapshots").json()

    assert alone.status_code == 200 and alone.json()["host"] == "node-a"
    assert ambiguous.status_code == 400
    assert "?host=" in ambiguous.json()["detail"] and "node-a, node-b" in ambiguous.json()["detail"]
    assert b.status_code == 200 and b.json()["host"] == "node-b" and b.json()["gpus"]
    assert unknown.status_code == 404
    assert "node-z" in unknown.json()["detail"] and "node-a, node-b" in unknown.json()["detail"]
    assert [f["host"] for f in every["items"]] == ["node-a", "node-b"] and every["count"] == 2


def test_live_history_is_per_node(operator):
    t = now_ms() - 10_000
    for i in range(10):
        async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", t + i * 1000))
    async_to_sync(fleet.receive_frame)("node-b", frame_of("node-b", t + 9000))
    client = client_for(operator)

    a = client.get("/api/telemetry/history?range=5m&host=node-a").json()
    b = client.get("/api/telemetry/history?range=5m&host=node-b").json()
    unknown = client.get("/api/telemetry/history?range=5m&host=node-z")

    assert (a["host"], len(a["t"])) == ("node-a", 10)
    assert (b["host"], len(b["t"])) == ("node-b", 1)
    assert len(a["series"]["cpu"]["avg"]) == 10 and "gpu0_util" in a["series"]
    assert unknown.status_code == 404


def test_metrics_has_every_nodes_figures_with_its_host_label(settings):
    settings.METRICS_TOKEN = "scrape-secret"
    t = now_ms()
    async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", t))
    async_to_sync(fleet.receive_frame)("node-b", frame_of("node-b", t))

    response = client_for(None).get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert response.status_code == 200
    hosts: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            hosts.setdefault(sample.name, set()).add(sample.labels.get("host", ""))
    for name in ("opsdash_cpu_usage_ratio", "opsdash_memory_used_bytes", "opsdash_gpu_power_watts"):
        assert {"node-a", "node-b"} <= hosts[name], name


def test_an_alert_on_a_node_is_an_episode_of_that_node_and_its_banner_names_it():
    AlertRule.objects.create(kind="ram", threshold=0.5, enabled=True)  # any host is above
    t = now_ms()
    async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", t))
    assert fleet.drain()  # the thresholds in force are read
    for i in range(1, 5):
        async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", t + i * 1000))
    assert fleet.drain()

    [episode] = AlertEpisode.objects.filter(kind="ram")
    latest = get_store().latest("node-a")
    assert episode.host == "node-a" and episode.ended_at is None
    assert episode.message.startswith("node-a: Host RAM ")
    assert latest is not None
    assert [a["message"] for a in latest["alerts"] if a["kind"] == "ram"] == [episode.message]


def test_a_nodes_minutes_are_stored_under_its_name():
    minute = (now_ms() // 60_000 - 3) * 60_000
    for second in (5, 20, 40):
        async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", minute + second * 1000))
    async_to_sync(fleet.receive_frame)("node-a", frame_of("node-a", minute + 61_000))
    assert fleet.drain()

    [row] = MinuteFigures.objects.filter(host="node-a")
    assert row.samples == 3 and row.minute.timestamp() * 1000 == minute
    assert set(row.figures["cpu"]) and len(row.figures["cpu"]) == 3

    fleet.forget_node("node-a")  # the socket left: the minute so far is stored too
    assert fleet.drain()
    assert MinuteFigures.objects.filter(host="node-a").count() == 2


def test_what_is_not_a_frame_is_dropped():
    assert async_to_sync(fleet.receive_frame)("node-a", '{"type":"frame","t":"soon"}') is False
    assert async_to_sync(fleet.receive_frame)("node-a", "not json") is False
    assert get_store().live_hosts() == []


def test_a_node_not_heard_from_for_the_offline_limit_drops_out_of_live():
    store = FleetStore(offline_seconds=0.2)
    t = now_ms()
    store.put("node-a", frame_of("node-a", t))
    store.put("node-b", frame_of("node-b", t))
    time.sleep(0.25)
    store.put("node-b", frame_of("node-b", t + 1000))

    assert store.live_hosts() == ["node-b"]
    assert store.latest("node-a") is None and store.history_frames("node-a") == []
    assert store.put("node-b", frame_of("node-b", t)) is False, "an older frame is not newer"


@pytest.mark.parametrize("persona", ["manager", "outsider"])
async def test_people_without_telemetry_rights_get_no_node(persona, request):
    user = await sync_to_async(request.getfixturevalue)(persona)
    ws = await telemetry_socket(user)
    assert (await ws.connect()) == (False, 4403)


def test_the_page_shows_every_node_as_a_card_and_the_chosen_one_in_full(operator):
    t = now_ms()
    for node in ("node-b", "node-a"):
        async_to_sync(fleet.receive_frame)(node, frame_of(node, t))
    client = client_for(operator)

    first = client.get("/telemetry/").content.decode()
    chosen = client.get("/telemetry/?host=node-b").content.decode()
    unknown = client.get("/telemetry/?host=node-z").content.decode()

    cards = re.findall(r'<a class="node-card" href="\?host=([^"]+)"', first)
    assert cards == ["node-a", "node-b"]
    assert 'data-focus="node-a"' in first, "without ?host=, the first node in full"
    assert 'data-focus="node-b"' in chosen
    assert re.search(r'data-host="node-b"[^>]*aria-current="true"', chosen)
    assert 'data-testid="unknown-host"' in unknown and "node-z" in unknown
