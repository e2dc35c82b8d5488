"""The workflow edit page in a real browser: the model list follows the chosen provider, a save
applies from then on, archive and restore; at 1280 and 390 px."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from opsdash.runs.models import Workflow
from opsdash.savings.models import CostingChange
from tests.e2e.conftest import screenshot, sign_in
from tests.savings.factories import price, workflow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_admin_picks_a_baseline_by_provider_then_model_and_archives_the_workflow(
    page: Page, live_server, admin
) -> None:  # type: ignore[no-untyped-def]
    start = timezone.now() - timedelta(days=30)
    # Providers genai-prices does not know: the migration's rows may or may not be there.
    price("acme", "chat-mini", "0.15", "0.60", start=start)
    price("acme", "chat", "2.50", "10", start=start)
    price("globex", "writer-1", "3", "15", start=start)
    workflow("support-bot", "acme", "chat-mini", name="Support bot")

    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/savings/workflows/support-bot/")
    page.get_by_test_id("edit-workflow").click()
    page.wait_for_url(f"{live_server.url}/savings/workflows/support-bot/edit/")
    provider, model = (
        page.get_by_test_id("baseline-provider"),
        page.get_by_test_id("baseline-model"),
    )
    expect(model).to_have_value("chat-mini")
    expect(model.locator("optgroup")).to_have_count(1)  # only acme's models
    expect(model.locator("option")).to_have_text(
        [
            "chat — $2.50 in / $10.00 out per 1M tokens",
            "chat-mini — $0.15 in / $0.60 out per 1M tokens",
        ]
    )
    screenshot(page, "workflow-edit-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    screenshot(page, "workflow-edit-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    provider.select_option("globex")
    expect(model).to_have_value("writer-1")  # the first of that provider's models
    expect(model.locator("option")).to_have_count(1)
    provider.select_option("")
    expect(model).to_be_disabled()
    provider.select_option("globex")
    page.get_by_label("Name").fill("Support assistant")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/savings/workflows/support-bot/")
    expect(page.get_by_test_id("costing-summary")).to_contain_text("globex/writer-1")
    change = CostingChange.objects.filter(workflow__slug="support-bot").latest("effective_from")
    assert (change.baseline_provider, change.baseline_model) == ("globex", "writer-1")
    assert Workflow.objects.get(slug="support-bot").name == "Support assistant"

    page.get_by_test_id("edit-workflow").click()
    page.get_by_test_id("archive").click()
    expect(page.get_by_test_id("archived")).to_be_visible()
    assert Workflow.objects.get(slug="support-bot").is_archived
    page.get_by_test_id("restore").click()
    expect(page.get_by_test_id("archive")).to_be_visible()
    assert not Workflow.objects.get(slug="support-bot").is_archived
