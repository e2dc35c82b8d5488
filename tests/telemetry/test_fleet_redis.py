"""Fleet telemetry through a real Redis: a hub process that holds no node and serves no page
still knows every node's figures, and keeps learning them after Redis restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from opsdash.telemetry import fleet, frames, relay
from opsdash.telemetry.store import get_store, reset_store
from tests.fixtures.personas import client_for
from tests.telemetry.test_fleet import frame_of, now_ms

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_hub(settings, redis_server) -> Iterator[None]:  # type: ignore[no-untyped-def]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    settings.TELEMETRY_EMBEDDED = False
    reset_store()
    fleet.reset()
    yield
    relay.stop_listener()
    reset_store()


def send_from_another_hub(host: str, t: int) -> None:
    """What the hub process holding ``host``'s socket sends to the group (not stored here)."""
    text = frame_of(host, t)

    async def send() -> None:
        layer = get_channel_layer()
        await layer.group_send(
            frames.GROUP, {"type": "telemetry.frame", "host": host, "text": text, "t": t}
        )

    async_to_sync(send)()


def until_live(host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while host not in get_store().live_hosts():
        assert time.monotonic() < deadline, f"{host} never reached this process's store"
        send_from_another_hub(host, now_ms())
        time.sleep(0.2)


def test_a_hub_process_learns_other_processes_nodes_through_redis(
    redis_hub, operator, redis_server
):  # type: ignore[no-untyped-def]
    client = client_for(operator)
    assert relay.start_listener(), "the first read starts this process's listener"
    send_from_another_hub("node-r", now_ms())
    until_live("node-r")

    snapshot = client.get("/api/telemetry/snapshot?host=node-r")
    assert snapshot.status_code == 200 and snapshot.json()["host"] == "node-r"

    redis_server.restart()  # every group forgotten: the listener joins again by itself
    reset_store()
    until_live("node-r", timeout=20)
    assert client.get("/api/telemetry/snapshot?host=node-r").status_code == 200
