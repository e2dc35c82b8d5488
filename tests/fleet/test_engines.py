"""Two hub processes on one real PostgreSQL and one real Redis: they serve the same state, share
sessions, and keep serving when Redis restarts."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from tests.fleet.harness import Fleet, wait_for

pytestmark = pytest.mark.fleet


def telemetry_socket_opens(fleet: Fleet, *, hub: int, cookie: str) -> bool:
    """Open /ws/telemetry/ on hub ``hub``: the handshake completes only once the hub process has
    joined its telemetry group on the channel layer, that is, once Redis answered it."""
    base = fleet.hubs[hub].url
    url = base.replace("http://", "ws://") + "/ws/telemetry/"
    # A browser's handshake names its page's origin; the hub refuses one that names none.
    headers = {"Cookie": cookie, "Origin": base}
    with connect(url, additional_headers=headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "ack"}))
        socket.ping().wait(5)
    return True


def test_both_hubs_answer_health_and_the_node_list(fleet: Fleet) -> None:
    for index, hub in enumerate(fleet.hubs):
        health = fleet.api("GET", "/healthz", hub=index, token="")
        assert health.status == 200, (hub.label, health)
        assert health.json() == {"status": "ok"}
        nodes = fleet.api("GET", "/api/nodes", hub=index)
        assert nodes.status == 200, (hub.label, nodes)
        assert set(nodes.json()) >= {"items", "count"}
    assert fleet.hubs[0].pid != fleet.hubs[1].pid


def test_a_row_written_through_one_hub_is_read_through_the_other(fleet: Fleet) -> None:
    created = fleet.api(
        "POST",
        "/api/workflows",
        json={"name": "Ticket triage", "baseline_provider": "openai", "baseline_model": "gpt-4o"},
        hub=0,
    )
    assert created.status == 201, created
    listed = fleet.api("GET", "/api/workflows", hub=1)
    assert listed.status == 200, listed
    assert "ticket-triage" in [w["slug"] for w in listed.json()["items"]]
    # The same slug through the other hub is a conflict: one database, not two.
    again = fleet.api("POST", "/api/workflows", json={"name": "Ticket triage"}, hub=1)
    assert again.status == 409, again


def test_a_session_signed_in_on_one_hub_is_valid_on_the_other(fleet: Fleet) -> None:
    cookie = fleet.sign_in("operator", hub=0)
    page = fleet.api("GET", "/telemetry/", hub=1, token="", headers={"Cookie": cookie})
    assert page.status == 200, page
    assert page.url.endswith("/telemetry/"), page.url
    anonymous = fleet.api("GET", "/telemetry/", hub=1, token="")
    assert "/accounts/login/" in anonymous.url, anonymous.url


def test_the_hubs_keep_serving_and_use_the_channel_layer_again_after_redis_restarts(
    fleet: Fleet,
) -> None:
    cookie = fleet.sign_in("operator", hub=0)
    assert telemetry_socket_opens(fleet, hub=0, cookie=cookie)
    assert telemetry_socket_opens(fleet, hub=1, cookie=cookie)

    fleet.redis.restart(down_seconds=1)

    for index in range(len(fleet.hubs)):
        assert fleet.hubs[index].alive, fleet.hubs[index].tail()
        assert fleet.api("GET", "/api/nodes", hub=index).status == 200
        # The hub's old Redis connections died with the server; it must dial again by itself.
        wait_for(
            lambda index=index: telemetry_socket_opens(fleet, hub=index, cookie=cookie),
            timeout=20,
            what=f"hub{index} opening a telemetry socket after the Redis restart",
            interval=1,
        )
