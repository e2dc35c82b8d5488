"""An operator watches the telemetry page stream, in a real browser against a real server."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import screenshot, sign_in
from tests.fixtures.models import install_ready
from tests.liveserver import serve
from tests.telemetry.fake_nvml import GIB, FakeNvml, nvmlClocksEventReasonSwPowerCap

pytestmark = [pytest.mark.e2e]

# Keeps every websocket the page opens reachable, so the test can drop one as a network would.
RECORD_SOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.openedSockets = [];
  window.WebSocket = function (url, protocols) {
    const socket = protocols ? new Real(url, protocols) : new Real(url);
    window.openedSockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""


def chart_updates(page: Page, seconds: float) -> list[str]:
    """The distinct last timestamps the CPU chart showed during ``seconds``."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = page.get_attribute('[data-chart="cpu"]', "data-last") or ""
        if last and (not seen or seen[-1] != last):
            seen.append(last)
        page.wait_for_timeout(100)
    return seen


def test_the_page_streams_explains_the_gpus_and_reconnects(
    page: Page, telemetry_server: str, operator, model_root, tiny_gguf_path
):
    asgi_server = telemetry_server
    model = install_ready(tiny_gguf_path, model_root)
    page.add_init_script(RECORD_SOCKETS)
    sign_in(page, asgi_server, "otto")
    page.goto(f"{asgi_server}/models/{model.pk}/")
    page.get_by_role("button", name="Load now").click()  # a real runner, in the server
    expect(page.get_by_test_id("runtime-state")).to_have_text("idle", timeout=60_000)

    page.goto(f"{asgi_server}/telemetry/")
    expect(page.locator('[data-role="conn"]')).to_have_text("live")
    expect(page.get_by_test_id("cpu-total")).to_have_text(re.compile(r"^\d+\.\d%$"))

    # The CPU chart takes a new point every second: at least two changes within 3 s.
    seen = chart_updates(page, 3.0)
    assert len(seen) >= 3, f"the CPU chart changed {len(seen) - 1} times in 3 s: {seen}"
    assert int(page.get_attribute('[data-chart="cpu"]', "data-points") or 0) >= 3

    # The GPU section says exactly what the server's NVML state is.
    frame = page.request.get(f"{asgi_server}/api/telemetry/snapshot").json()
    explanation = page.get_by_test_id("gpu-explanation")
    if frame["gpu_state"] == "ok":
        expect(page.get_by_test_id("gpu-card")).to_have_count(len(frame["gpus"]))
        expect(explanation).to_be_hidden()
    else:
        expect(explanation).to_be_visible()
        expect(explanation).to_contain_text(frame["gpu_detail"])
        if frame["gpu_state"] in {"no_library", "no_driver"}:  # this machine: no NVIDIA driver
            expect(explanation).to_contain_text("NVIDIA driver")

    # The loaded model, attributed: its runner's RSS shows in the table.
    row = page.locator('tbody[data-role="runners"] tr', has_text=model.name)
    expect(row).to_have_count(1, timeout=10_000)
    expect(row.locator('td[data-label="RSS"]')).to_contain_text("MiB")
    screenshot(page, "telemetry-1280")

    # A range from the database: the charts redraw with the API's points.
    page.get_by_role("radio", name="1 h", exact=True).click()
    expect(page.locator('[data-chart="cpu"]')).to_have_attribute("data-points", "61")
    expect(page.locator('[data-role="updated"]')).not_to_contain_text("unavailable")
    page.get_by_role("radio", name="5 min", exact=True).click()

    # The connection drops (a restart, a proxy's time limit): the page comes back by itself.
    page.evaluate("window.openedSockets[0].close()")
    expect(page.locator('[data-role="conn"]')).to_contain_text("reconnecting")
    expect(page.locator('[data-role="conn"]')).to_have_text("live", timeout=10_000)
    assert page.evaluate("window.openedSockets.length") == 2
    before = page.get_attribute('[data-chart="cpu"]', "data-last")
    expect(page.locator('[data-chart="cpu"]')).not_to_have_attribute("data-last", before or "")


def test_the_page_fits_a_phone(page: Page, telemetry_server: str, operator):
    asgi_server = telemetry_server
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, asgi_server, "otto")
    page.goto(f"{asgi_server}/telemetry/")
    expect(page.locator('[data-role="conn"]')).to_have_text("live")
    # A function, not an expression: the page's CSP (no 'unsafe-eval') refuses a string to eval.
    page.wait_for_function("() => document.querySelector('[data-chart=cpu]').dataset.points >= 2")

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width}px wide"
    chart = page.locator('[data-chart="cpu"] canvas').bounding_box()
    assert chart is not None and chart["width"] <= 370
    screenshot(page, "telemetry-390")


def _prepare_gpu_server() -> None:
    """The forked server's sampler reads two pretend GPUs, both 1 °C from their slowdown
    temperature, the first held at its power cap (the fake NVML module at the probe boundary:
    the one thing this machine lacks)."""
    from opsdash.telemetry import sampler

    original = sampler.Sampler.from_settings.__func__  # type: ignore[attr-defined]
    nvml = FakeNvml(gpus=2, temperature=88, memory_used=61 * GIB)
    nvml.gpu(0).reasons = nvmlClocksEventReasonSwPowerCap
    nvml.gpu(0).remapped = (2, 0, 1, 0)
    sampler.Sampler.from_settings = classmethod(  # type: ignore[method-assign]
        lambda cls, **options: original(cls, **{"nvml": nvml, **options})
    )


def _serve(setup: Callable[[], None] | None = None) -> Iterator[str]:
    with serve(setup) as server:
        yield server.url


@pytest.fixture
def telemetry_server(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The ``asgi_server`` fixture's server, with the telemetry test's setup."""
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    yield from _serve()


@pytest.fixture
def gpu_server(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    yield from _serve(_prepare_gpu_server)


def test_gpu_cards_with_their_health_and_a_thermal_margin_alert(
    page: Page, gpu_server: str, operator
):
    sign_in(page, gpu_server, "otto")
    page.goto(f"{gpu_server}/telemetry/")

    cards = page.get_by_test_id("gpu-card")
    expect(cards).to_have_count(2)
    expect(cards.first).to_contain_text("NVIDIA H100 80GB HBM3")
    expect(cards.first).to_contain_text("61 GiB / 80 GiB")
    expect(cards.first).to_contain_text("612 W / 700 W")
    expect(cards.first).to_contain_text("passive")  # no fan on this board
    expect(cards.first).to_contain_text("1 °C (slows at 89)")
    expect(cards.first).to_contain_text("power cap")
    expect(cards.first).to_contain_text("remap pending")
    expect(cards.nth(1)).to_contain_text("Throttle")
    expect(cards.first.locator(".trouble")).to_have_count(3)  # margin, throttle, repair
    expect(page.get_by_test_id("gpu-explanation")).to_be_hidden()
    page.wait_for_function(
        "() => document.querySelector('[data-chart=gpu_temp]').dataset.points >= 2"
    )

    banner = page.locator('[data-role="banners"] .banner').first
    # The margin, not a fixed temperature, and the pending remap of GPU 0.
    expect(banner).to_contain_text("from its slowdown temperature", timeout=10_000)
    expect(page.locator("#alert-episodes tr.ongoing")).to_have_count(3, timeout=10_000)
    screenshot(page, "telemetry-gpus-1280")
