"""An admin adds a webhook channel in a real browser, sends a test, and the live server's own
sender delivers it; the page at 1280 and 390 px (screenshots in test-artifacts/)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from opsdash.notify.models import Channel
from opsdash.notify.services import EventKind, emit
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width} px wide"  # type: ignore[index]


def test_an_admin_adds_a_channel_sends_a_test_and_sees_it_delivered(
    page: Page, asgi_server: str, admin, receiver, settings
) -> None:  # type: ignore[no-untyped-def]
    Channel.objects.create(
        name="Finance", kind="email", target="cfo@example.com", roles=["manager"], events=["budget"]
    )
    emit(
        kind=EventKind.BUDGET,
        key="budget:1:2026-05-01:80",
        subject="Support bot at 80 % of its monthly budget",
        message="Support bot used 80 % of $40.00; at this rate it runs out on 27 May.",
        link="/savings/",
    )
    sign_in(page, asgi_server, admin.username)
    page.goto(f"{asgi_server}/notifications/")

    form = page.locator("#add-channel")
    form.locator("input[name=name]").fill("Ops webhook")
    form.locator("select[name=kind]").select_option("webhook")
    form.locator("input[name=target]").fill(receiver.url)
    form.get_by_role("button", name="Add channel").click()
    expect(page.get_by_text("Channel “Ops webhook” added.")).to_be_visible()

    card = page.locator(".notify-channel", has_text="Ops webhook")
    card.get_by_role("button", name="Send a test").click()
    deadline = time.monotonic() + 15
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert receiver.requests, "the live server's sender did not deliver the test"
    assert receiver.requests[0].json()["event"] == "test"

    page.goto(f"{asgi_server}/notifications/")
    row = page.locator("tr", has_text="Test message for Ops webhook")
    expect(row.locator(".notify-status-sent")).to_be_visible()
    expect(row).to_contain_text("HTTP 200")
    card.locator("summary", has_text="Signing secret").click()
    expect(card.locator("code.copy-value")).to_have_text(
        Channel.objects.get(name="Ops webhook").secret
    )
    screenshot(page, "notify-1280")
    _no_sideways_scroll(page)

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    _no_sideways_scroll(page)
    screenshot(page, "notify-390")
