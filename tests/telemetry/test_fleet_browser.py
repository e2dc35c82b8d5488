"""An operator watches a hub's telemetry page: three nodes side by side, one in full.

The live server is a hub (no sampler of its own). Three nodes' frames reach it the way an agent's
do, through ``fleet.receive_frame`` on the server's event loop: real frames from three real
samplers, each with its own fake NVML (0, 2 and 8 GPUs), the one thing this machine lacks.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ARTIFACTS, screenshot, sign_in
from tests.liveserver import serve
from tests.telemetry.fake_nvml import FakeNvml
from tests.telemetry.nodes import node_sampler, run_after_startup

pytestmark = [pytest.mark.e2e]

NODES = {"gpu-a": 2, "gpu-b": 8, "cpu-c": 0}


def _feed_nodes() -> None:
    """In the forked server: once uvicorn's loop runs, send every node's frame each second."""
    from opsdash.telemetry import fleet, frames

    samplers = {}
    for name, gpus in NODES.items():
        nvml = FakeNvml(gpus=gpus)
        samplers[name] = (node_sampler(name, nvml=nvml), nvml)

    async def send(tick: int, at_ms: int | None = None) -> None:
        for name, (sampler, nvml) in samplers.items():
            nvml.utilization = (tick * 7 + len(name) * 13) % 100
            frame = await asyncio.to_thread(sampler.tick)
            if at_ms is not None:
                frame["t"] = at_ms
            await fleet.receive_frame(name, frames.encode(frame))

    async def feed() -> None:
        # The last two minutes first (as if the nodes had been up a while), then live.
        now_ms = int(time.time() * 1000)
        for tick in range(120):
            await send(tick, now_ms - (120 - tick) * 1000)
        tick = 120
        while True:
            await send(tick)
            tick += 1
            await asyncio.sleep(1.0)

    run_after_startup(feed)


@pytest.fixture
def hub_server(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.TELEMETRY_EMBEDDED = False
    with serve(_feed_nodes) as server:
        yield server.url


def test_every_node_is_a_card_and_one_is_shown_in_full(page: Page, hub_server: str, operator):
    sign_in(page, hub_server, "otto")
    page.goto(f"{hub_server}/telemetry/")
    expect(page.locator('[data-role="conn"]')).to_have_text("live")

    cards = page.get_by_test_id("node-card")
    expect(cards).to_have_count(3, timeout=10_000)
    expect(cards.nth(0)).to_contain_text("cpu-c")  # by name; the first is shown in full
    b = page.locator('.node-card[data-host="gpu-b"]')
    expect(b.locator('[data-field="status"]')).to_have_text("healthy")
    expect(b.locator('[data-field="gpu"]')).to_have_text(re.compile(r"^\d+%$"))
    expect(b.locator('[data-field="vram"]')).to_have_text(re.compile(r"^\d+%$"))
    expect(b.locator('[data-field="legend"]')).to_contain_text("8 GPUs")
    expect(b.locator('[data-field="models"]')).to_have_text("0 models loaded")
    expect(page.locator('.node-card[data-host="cpu-c"] [data-field="legend"]')).to_contain_text(
        "no GPU"
    )
    expect(page.locator('[data-role="host"]')).to_have_text("cpu-c")
    # Sparklines draw; the full view's chart takes a point a second.
    page.wait_for_function(
        "() => document.querySelector('.node-card[data-host=gpu-b] polyline')"
        ".getAttribute('points').split(' ').length >= 100"
    )
    page.wait_for_function("() => document.querySelector('[data-chart=cpu]').dataset.points >= 3")
    screenshot(page, "telemetry-fleet-1280")

    b.click()  # that node in full
    expect(page).to_have_url(re.compile(r"\?host=gpu-b$"))
    expect(page.locator('[data-role="host"]')).to_have_text("gpu-b", timeout=10_000)
    expect(page.get_by_test_id("gpu-card")).to_have_count(8)
    expect(page.locator('.node-card[aria-current="true"]')).to_have_attribute("data-host", "gpu-b")

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width}px wide"
    screenshot(page, "telemetry-fleet-390")
    page.screenshot(path=str(ARTIFACTS / "telemetry-fleet-390-top.png"))
