"""An operator watches a hub's telemetry page while an admin drains a node: the node's card
says ``draining`` within seconds, without a reload; an offline node has a card saying so.

The live server is a fleet hub (no sampler of its own). Two nodes send real frames (a real
sampler each, with the fake NVML's one GPU) through ``fleet.receive_frame`` on the server's
loop, and heartbeat (their ``last_seen`` kept fresh) as their agents would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from opsdash.fleet.models import Node, NodeStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.liveserver import serve
from tests.telemetry.nodes import node_sampler, run_after_startup

pytestmark = [pytest.mark.e2e]

LIVE = ("gpu-a", "gpu-b")


def _feed_nodes() -> None:
    """In the forked server: once uvicorn's loop runs, each live node's frame and heartbeat
    every second."""
    from opsdash.telemetry import fleet, frames

    samplers = [node_sampler(name) for name in LIVE]

    async def feed() -> None:
        while True:
            for sampler in samplers:
                frame = await asyncio.to_thread(sampler.tick)
                await fleet.receive_frame(sampler.host, frames.encode(frame))
            await Node.objects.filter(name__in=LIVE).aupdate(last_seen=timezone.now())
            await asyncio.sleep(1.0)

    run_after_startup(feed)


@pytest.fixture
def hub_server(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.TELEMETRY_EMBEDDED = False
    settings.FLEET = True
    now = timezone.now()
    Node.objects.create(name="gpu-a", status=NodeStatus.HEALTHY, approved_at=now, last_seen=now)
    Node.objects.create(
        name="gpu-b", status=NodeStatus.DRAINING, draining=True, approved_at=now, last_seen=now
    )
    Node.objects.create(
        name="gpu-gone",
        status=NodeStatus.OFFLINE,
        approved_at=now,
        last_seen=now - timedelta(minutes=10),
    )
    with serve(_feed_nodes) as server:
        yield server.url


def test_a_drained_node_reads_draining_on_its_card_without_a_reload(
    page: Page, hub_server: str, operator
) -> None:
    sign_in(page, hub_server, "otto")
    page.goto(f"{hub_server}/telemetry/")
    expect(page.locator('[data-role="conn"]')).to_have_text("live")

    def badge(host: str):  # type: ignore[no-untyped-def]
        return page.locator(f'.node-card[data-host="{host}"] [data-field="status"]')

    expect(badge("gpu-a")).to_have_text("healthy")
    expect(badge("gpu-b")).to_have_text("draining")
    expect(badge("gpu-b")).to_have_class("status node-status status-node-draining")
    expect(badge("gpu-gone")).to_have_text("offline")
    gone = page.locator('.node-card[data-host="gpu-gone"]')
    expect(gone.locator('[data-field="legend"]')).to_have_text("sends no telemetry")
    # gpu-b's frames keep coming, and its card still says draining, not healthy.
    expect(page.locator('.node-card[data-host="gpu-b"] [data-field="gpu"]')).to_have_text(
        re.compile(r"^\d+%$")
    )
    page.wait_for_timeout(1500)
    expect(badge("gpu-b")).to_have_text("draining")
    screenshot(page, "telemetry-node-status-1280")

    # An admin drains gpu-a (the row as the fleet's drain_node leaves it).
    Node.objects.filter(name="gpu-a").update(status=NodeStatus.DRAINING, draining=True)
    expect(badge("gpu-a")).to_have_text("draining", timeout=12_000)
    Node.objects.filter(name="gpu-a").update(status=NodeStatus.HEALTHY, draining=False)
    expect(badge("gpu-a")).to_have_text("healthy", timeout=12_000)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width}px wide"
    screenshot(page, "telemetry-node-status-390")
