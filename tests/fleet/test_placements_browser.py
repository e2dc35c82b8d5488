"""The Placements card in Chromium: a model's nodes at a glance, deployed with one click, at
1280 and 390 px (screenshots in test-artifacts/)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from opsdash.fleet import placements
from tests.e2e.conftest import screenshot, sign_in
from tests.fleet.placing import enroll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def placed_model(settings, tiny_model, admin):  # type: ignore[no-untyped-def]
    """The tiny model on three nodes (fetching, ready, failed) with a fourth one free."""
    settings.FLEET = True
    size = tiny_model.size_bytes
    reports = {
        "gpu-a": {"status": "fetching", "bytes_done": size * 2 // 5},
        "gpu-b": {"status": "ready", "bytes_done": size},
        "gpu-c": {"status": "failed", "error": "No space left on device (needs 3.2 MB)."},
    }
    for name, report in reports.items():
        node = enroll(name, connected_via=f"specific.hub!{name}").node
        placements.place_model(model=tiny_model, node=node, user=admin)
        placements.record_placement(node=node, model_id=tiny_model.pk, **report)  # type: ignore[arg-type]
    enroll("gpu-d")
    return tiny_model


def test_an_admin_sees_where_a_model_runs_and_deploys_it_to_another_node(
    placed_model, asgi_server: str, page: Page, admin
) -> None:
    # placed_model first: Playwright's sync API holds an event loop in this thread, and the
    # services' messages to nodes (async_to_sync) may not run inside one.
    sign_in(page, asgi_server, admin.username)
    page.goto(f"{asgi_server}/models/{placed_model.pk}/")
    card = page.get_by_test_id("placements")
    expect(card.locator('[data-node="gpu-a"]')).to_contain_text("fetching")
    expect(card.locator('[data-node="gpu-b"]')).to_contain_text("ready")
    expect(card.locator('[data-node="gpu-c"]')).to_contain_text("No space left on device")
    expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
    card.scroll_into_view_if_needed()
    screenshot(page, "placements-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.get_by_test_id("placements").locator('[data-node="gpu-c"]')).to_be_visible()
    # At 390 px the rows become cards: nothing runs off the right edge.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at 390 px"
    screenshot(page, "placements-390")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.reload()
    form = page.get_by_test_id("deploy-form")
    form.get_by_label("Deploy to").select_option("gpu-d")
    form.get_by_role("button", name="Deploy").click()
    expect(page.get_by_text("Deploying “tiny-llama")).to_be_visible()
    expect(page.get_by_test_id("placements").locator('[data-node="gpu-d"]')).to_contain_text(
        "pending"
    )
