"""On a hub the telemetry page's node cards show each node's recorded status (pending,
healthy, unhealthy, offline, draining) from the fleet, through the status source the fleet
registers; nodes that send no frame get a card too. Without a source, the frames' age decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.fleet.models import Node, NodeStatus
from opsdash.fleet.statuses import node_statuses
from opsdash.telemetry import fleet, frames, node_status, services
from opsdash.telemetry.store import get_store, reset_store
from tests.telemetry.nodes import node_frame

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def hub(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """This process is a fleet hub: no sampler of its own, nodes' frames in its store."""
    settings.TELEMETRY_EMBEDDED = False
    settings.FLEET = True
    reset_store()
    fleet.reset()
    yield
    fleet.reset()
    reset_store()


def send_frame(host: str) -> None:
    """A real frame (a real sampler's tick, the fake NVML's one GPU) of ``host``, just now."""
    assert get_store().put(host, frames.encode(node_frame(host)))


def node(name: str, status: str, *, seen_ago: float = 1.0, approved: bool = True) -> Node:
    now = timezone.now()
    return Node.objects.create(
        name=name,
        status=status,
        draining=status == NodeStatus.DRAINING,
        approved_at=now if approved else None,
        last_seen=now - timedelta(seconds=seen_ago),
    )


@pytest.fixture
def fleet_nodes() -> None:
    """Five nodes, one per status; the three heartbeating ones send frames."""
    node("gpu-a", NodeStatus.HEALTHY)
    node("gpu-b", NodeStatus.DRAINING)
    node("gpu-new", NodeStatus.PENDING, approved=False)
    # Recorded healthy, but its heartbeat is 20 s old: the reader ages it, as the sweep will.
    node("gpu-slow", NodeStatus.HEALTHY, seen_ago=20)
    node("gpu-gone", NodeStatus.OFFLINE, seen_ago=600)
    for host in ("gpu-a", "gpu-b", "gpu-slow"):
        send_frame(host)


def _cards() -> dict[str, dict[str, Any]]:
    return {card["host"]: dict(card) for card in services.node_cards()}


def test_cards_show_each_nodes_recorded_status_and_list_the_nodes_without_frames(
    fleet_nodes: None,
) -> None:
    cards = _cards()
    assert {host: card["status"] for host, card in cards.items()} == {
        "gpu-a": "healthy",
        "gpu-b": "draining",
        "gpu-slow": "unhealthy",
        "gpu-new": "pending",
        "gpu-gone": "offline",
    }
    assert all(card["recorded"] for card in cards.values())
    assert {host for host, card in cards.items() if card["live"]} == {"gpu-a", "gpu-b", "gpu-slow"}
    # The nodes sending frames come first, so the page shows one of them in full.
    assert [card["host"] for card in services.node_cards()][:3] == ["gpu-a", "gpu-b", "gpu-slow"]


def test_the_page_renders_the_recorded_statuses_and_shows_a_live_node_in_full(
    as_operator: Client, fleet_nodes: None
) -> None:
    page = as_operator.get("/telemetry/").content.decode()
    for host, status in (("gpu-b", "draining"), ("gpu-new", "pending"), ("gpu-gone", "offline")):
        card = page[page.index(f'data-host="{host}"') :][:800]
        assert f'data-recorded-status="{status}"' in card
        assert f'status-node-{status}" data-field="status">{status}<' in card
    gone = page[page.index('data-host="gpu-gone"') :][:1200]
    assert 'data-live="false"' in gone and "sends no telemetry" in gone
    assert 'data-focus="gpu-a"' in page
    assert 'data-nodes-url="/api/telemetry/nodes"' in page
    # A node that sends no frame cannot be shown in full: the page says so and shows another.
    asked = as_operator.get("/telemetry/?host=gpu-gone").content.decode()
    assert 'data-testid="unknown-host"' in asked and 'data-focus="gpu-a"' in asked


def test_the_nodes_endpoint_answers_the_cards_statuses_for_the_page_to_refresh(
    as_operator: Client, fleet_nodes: None
) -> None:
    answer = as_operator.get("/api/telemetry/nodes").json()
    items = {item["host"]: item for item in answer["items"]}
    assert answer["count"] == 5
    assert items["gpu-b"]["status"] == "draining" and items["gpu-b"]["live"] is True
    assert items["gpu-gone"] == {
        "host": "gpu-gone",
        "status": "offline",
        "recorded": True,
        "live": False,
        "age_seconds": None,
    }
    # An admin drains gpu-a: the next answer says so.
    Node.objects.filter(name="gpu-a").update(status=NodeStatus.DRAINING, draining=True)
    again = {i["host"]: i for i in as_operator.get("/api/telemetry/nodes").json()["items"]}
    assert again["gpu-a"]["status"] == "draining"


def test_the_nodes_endpoint_is_for_those_who_see_telemetry(
    client: Client, as_manager: Client, fleet_nodes: None
) -> None:
    assert client.get("/api/telemetry/nodes").status_code == 401
    assert as_manager.get("/api/telemetry/nodes").status_code == 403


def test_without_a_status_source_the_frames_age_decides(fleet_nodes: None) -> None:
    with node_status.status_sources.override():
        cards = _cards()
    assert set(cards) == {"gpu-a", "gpu-b", "gpu-slow"}  # frames only
    assert {card["status"] for card in cards.values()} == {"healthy"}
    assert not any(card["recorded"] for card in cards.values())


def test_a_failing_status_source_is_logged_and_the_cards_fall_back(
    fleet_nodes: None, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("database went away")

    with node_status.status_sources.override(broken), caplog.at_level(logging.ERROR):
        cards = _cards()
    assert cards["gpu-b"]["status"] == "healthy" and not cards["gpu-b"]["recorded"]
    assert "node status source" in caplog.text and "database went away" in caplog.text


def test_the_fleet_registers_its_source_and_says_nothing_in_the_embedded_mode(settings) -> None:
    assert node_statuses in node_status.status_sources.entries()
    node("gpu-a", NodeStatus.DRAINING)
    assert node_statuses() == {"gpu-a": "draining"}
    settings.FLEET = False
    assert node_statuses() == {}


def test_the_embedded_host_is_its_one_healthy_card(settings) -> None:
    settings.TELEMETRY_EMBEDDED = True
    settings.FLEET = False
    node("elsewhere", NodeStatus.OFFLINE)  # a leftover row does not reach the embedded page
    cards = services.node_cards()
    assert [(card["host"], card["status"], card["live"]) for card in cards] == [
        (str(settings.TELEMETRY_HOST), "healthy", True)
    ]
