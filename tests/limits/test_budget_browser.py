"""The budget card on the workflow's savings page and the limits form, in Chromium at 1280 and
390 px: readable, nothing wider than the screen; screenshots kept in test-artifacts/."""

from __future__ import annotations

import pytest

from opsdash.limits.services import BudgetSpec, set_limits
from tests.e2e.conftest import ARTIFACTS, screenshot, sign_in
from tests.limits.conftest import gateway_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_the_budget_card_and_the_limits_form_fit_the_screen(
    page, admin, key, ledger_model, asgi_server, width
):  # type: ignore[no-untyped-def]
    set_limits(
        workflow=key.workflow,
        budget=BudgetSpec(window="month", tokens=4000, usd="10"),
        requests_per_minute=60,
        tokens_per_minute=None,
        user=None,
    )
    gateway_run(key, ledger_model)
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, asgi_server, admin.username)

    page.goto(f"{asgi_server}/savings/workflows/{key.workflow.slug}/")
    card = page.get_by_test_id("budget-card")
    card.scroll_into_view_if_needed()
    assert card.is_visible()
    assert "38 %" in card.inner_text() and "1,500 used of 4,000" in card.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    ARTIFACTS.mkdir(exist_ok=True)
    card.screenshot(path=str(ARTIFACTS / f"limits-budget-card-{width}.png"))

    page.get_by_role("link", name="Edit limits").click()
    page.wait_for_url(f"**/limits/workflows/{key.workflow.slug}/")
    assert page.locator("select[name=budget_window]").input_value() == "month"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(page, f"limits-form-{width}")
