"""An admin approves a pending node on the Nodes page, in a real browser, and sees it healthy;
the page and a node's page at 1280 and 390 px."""

from __future__ import annotations

import json
import time

import pytest
from django.test import override_settings
from playwright.sync_api import Page, expect

from opsdash.fleet import services
from opsdash.fleet.models import Node
from opsdash.telemetry.store import get_store, reset_store
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GIB = 2**30


def _enroll(name: str, *, approve: bool, gpus: int = 0) -> Node:
    _, secret = services.create_node_token(name=f"for {name}", user=None)
    gpu_facts = [
        {"index": i, "name": "NVIDIA L4", "mem_total": 24 * GIB, "mem_used": None, "util": None}
        for i in range(gpus)
    ]
    with override_settings(FLEET=False):  # no health-sweep thread beside the live server
        node, _ = services.register_node(
            name=name,
            token_secret=secret,
            facts={"cpu_count": 32, "memory_total_bytes": 128 * GIB, "gpus": gpu_facts},
            version="0.11.0",
        )
    if approve:
        node = services.approve_node(node=node, user=None)
    return node


def _frame(name: str, gpus: int) -> str:
    """A frame as the node's agent sends it, kept in this process's fleet telemetry store."""
    return json.dumps(
        {
            "type": "frame",
            "t": int(time.time() * 1000),
            "host": name,
            "cpu": {"percent": [40] * 32, "total": 41.5, "freq_mhz": 3000, "load": [9, 8, 7]},
            "memory": {"total_bytes": 128 * GIB, "used_bytes": 71 * GIB},
            "disk": {"read_bytes_s": 0, "write_bytes_s": 0},
            "net": {"rx_bytes_s": 0, "tx_bytes_s": 0},
            "gpu_state": "ok",
            "gpu_detail": "",
            "server": None,
            "alerts": [],
            "gpus": [
                {
                    "index": i,
                    "name": "NVIDIA L4",
                    "util": 60 + 10 * i,
                    "mem_used": (8 + 6 * i) * GIB,
                    "mem_total": 24 * GIB,
                    "temp": 61 + i,
                    "power": 55.0 + i,
                    "power_limit": 72.0,
                }
                for i in range(gpus)
            ],
            "runners": [],
        }
    )


def test_an_admin_approves_a_pending_node_and_sees_it_healthy(
    page: Page, live_server, admin, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.FLEET = True
    reset_store()
    _enroll("gpu-1", approve=False, gpus=1)
    busy = _enroll("gpu-2", approve=True, gpus=2)
    services.record_heartbeat(
        node=busy,
        loaded=[{"model": 1, "name": "SmolLM2 135M", "slug": "smollm2", "queue_length": 1}],
        queue_length=1,
    )
    get_store().put("gpu-2", _frame("gpu-2", 2))

    sign_in(page, live_server.url, "ada")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Nodes").click()
    pending = page.get_by_test_id("node-gpu-1")
    expect(pending.get_by_test_id("node-status")).to_have_text("pending")
    expect(page.get_by_test_id("node-gpu-2").get_by_test_id("node-status")).to_have_text("healthy")
    expect(page.get_by_test_id("node-gpu-2")).to_contain_text("SmolLM2 135M")
    expect(page.get_by_test_id("node-gpu-2")).to_contain_text("42%")  # its CPU, from the frame

    pending.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("Node “gpu-1” approved")).to_be_visible()
    expect(page.get_by_test_id("node-gpu-1").get_by_test_id("node-status")).to_have_text("healthy")
    assert Node.objects.get(name="gpu-1").approved_by == admin
    screenshot(page, "nodes-1280")

    # The table refreshes itself: a node that falls silent shows unhealthy without a reload.
    Node.objects.filter(name="gpu-1").update(last_seen=busy.last_seen.replace(year=2000))
    expect(page.get_by_test_id("node-gpu-1").get_by_test_id("node-status")).to_have_text(
        "offline", timeout=10_000
    )

    page.get_by_role("button", name="Create node token").click()
    expect(page.get_by_test_id("new-node-token")).to_contain_text("odn_")
    expect(page.get_by_test_id("agent-command")).to_contain_text("--token odn_")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/nodes/")
    expect(page.get_by_test_id("node-gpu-2")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "nodes-390")

    page.goto(f"{live_server.url}/nodes/gpu-2/")
    expect(page.get_by_test_id("node-status")).to_have_text("healthy")
    expect(page.get_by_role("cell", name="NVIDIA L4").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "node-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Drain").click()
    expect(page.get_by_test_id("node-status")).to_have_text("draining")
    screenshot(page, "node-1280")
    reset_store()
