"""Savings in a real browser: a manager reads the figures and takes the CSV; an admin changes a
price and only new runs use it; an operator is refused."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from opsdash.runs.models import RunStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ledger() -> None:
    """A month of runs: two priced workflows, one unpriced, two local models."""
    now = timezone.now()
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=now - timedelta(days=90))
    price("anthropic", "claude-3-5-sonnet", "3", "15", start=now - timedelta(days=90))
    support = workflow("support-bot", "openai", "gpt-4o-mini", name="Support bot")
    review = workflow("code-review", "anthropic", "claude-3-5-sonnet", name="Code review")
    notes = workflow("meeting-notes", name="Meeting notes")
    small, big = local_model("SmolLM2-135M"), local_model("Llama-3.2-1B")
    for i in range(60):
        flow = [support, review, notes][i % 3]
        finished_run(
            flow,
            small if i % 2 else big,
            started_at=now - timedelta(days=i % 28, hours=i % 5),
            prompt_tokens=800 + 41 * i,
            completion_tokens=120 + 17 * i,
            status=RunStatus.ERROR if i % 11 == 0 else RunStatus.OK,
            cpu_seconds=1.5 + (i % 7) * 0.8,
        )


def test_a_manager_sees_the_overview_and_downloads_the_csv(
    page: Page, live_server, manager, ledger, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, live_server.url, "mona")
    page.goto(f"{live_server.url}/savings/")
    expect(page.get_by_role("heading", name="Savings", exact=True)).to_be_visible()
    expect(page.get_by_test_id("runs")).to_have_text("60")
    table = page.get_by_test_id("workflows")
    expect(table.get_by_role("row", name="Meeting notes")).to_contain_text("unpriced")
    expect(table.get_by_role("row", name="Code review")).not_to_contain_text("unpriced")
    expect(page.locator("#savings-chart .uplot")).to_be_visible()  # uPlot drew the chart
    chart = page.locator("#savings-chart")
    y_labels = (chart.get_attribute("data-y-labels") or "").split(" | ")
    assert len(y_labels) >= 2 and all("$" in label for label in y_labels), y_labels
    assert (chart.get_attribute("data-x-labels") or "").endswith("Today")
    screenshot(page, "savings-overview-1280")

    with page.expect_download() as download_info:
        page.get_by_test_id("csv").click()
    target = tmp_path / "savings.csv"
    download_info.value.save_as(target)
    rows = list(csv.DictReader(target.open()))
    total = rows[-1]
    assert total["day"] == "TOTAL" and total["runs"] == "60"
    shown = page.get_by_test_id("avoided").get_attribute("title") or ""
    assert shown == f"{total['avoided_usd']} USD"  # the page's exact figure is the CSV's
    assert page.get_by_test_id("net").get_attribute("title") == f"{total['net_usd']} USD"

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.locator("#savings-chart .uplot")).to_be_visible()
    screenshot(page, "savings-overview-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_test_id("workflows").get_by_role("link", name="Code review").click()
    expect(page.get_by_role("heading", name="Code review")).to_be_visible()
    expect(page.get_by_text("By local model")).to_be_visible()
    screenshot(page, "savings-workflow-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshot(page, "savings-workflow-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_an_admin_changes_a_price_and_old_runs_keep_their_figures(
    page: Page, live_server, admin
) -> None:  # type: ignore[no-untyped-def]
    price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=30))
    flow, model = workflow("drafts", "acme", "chat-1", name="Drafts"), local_model()
    old = finished_run(flow, model, started_at=timezone.now() - timedelta(days=3))

    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/savings/prices/?q=chat-1")
    page.fill("input[name=provider]", "acme")
    page.fill("input[name=model]", "chat-1")
    page.fill("input[name=input_price]", "3")
    page.fill("input[name=output_price]", "4")
    page.get_by_role("button", name="Add price").click()
    expect(page.get_by_text("Price for acme/chat-1 added")).to_be_visible()
    prices = page.get_by_test_id("prices")
    expect(prices.get_by_role("row").filter(has_text="$3.00")).to_contain_text("open")

    new = finished_run(flow, model)  # a run after the change, through the run services
    page.goto(f"{live_server.url}/savings/workflows/drafts/")
    runs = page.get_by_test_id("recent-runs")
    old_row, new_row = (
        runs.locator(f"tr[data-run='{old.pk}']"),
        runs.locator(f"tr[data-run='{new.pk}']"),
    )
    expect(old_row).to_contain_text("$1.00 / $2.00")
    expect(old_row.locator(".avoided")).to_have_text("$0.002")  # 1000 × $1 + 500 × $2 per Mtok
    expect(new_row).to_contain_text("$3.00 / $4.00")
    expect(new_row.locator(".avoided")).to_have_text("$0.005")  # 1000 × $3 + 500 × $4 per Mtok
    screenshot(page, "savings-price-change")


def test_an_operator_gets_403_on_the_savings_pages(page: Page, live_server, operator) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, live_server.url, "otto")
    for path in ("/savings/", "/savings/prices/", "/api/savings/summary"):
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 403, path


def test_an_empty_range_shows_a_hint_not_an_invented_scale(
    page: Page, live_server, admin, manager
) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("meeting-notes", name="Meeting notes")  # no baseline: its runs are unpriced
    finished_run(flow, local_model("SmolLM2-135M"))
    sign_in(page, live_server.url, "mona")
    page.goto(f"{live_server.url}/savings/")
    hint = page.get_by_test_id("chart-empty")
    expect(hint).to_contain_text("No priced runs in this range")
    expect(hint).to_contain_text("an admin sets a baseline on a workflow's page")
    expect(page.locator("#savings-chart")).to_have_count(0)
    screenshot(page, "savings-empty-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshot(page, "savings-empty-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.context.clear_cookies()
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/savings/workflows/meeting-notes/")
    link = page.get_by_test_id("chart-empty").get_by_role("link")
    expect(link).to_have_text("set a baseline on a workflow's page")
    assert link.get_attribute("href") == "/savings/workflows/meeting-notes/edit/"
    screenshot(page, "savings-workflow-empty-390")


def test_changing_the_range_reloads_the_page_with_it(
    page: Page, live_server, manager, ledger
) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, live_server.url, "mona")
    page.goto(f"{live_server.url}/savings/")
    expect(page.locator("button.range-apply")).to_be_hidden()  # applies by itself with scripts
    with page.expect_navigation():
        page.select_option("select[name=range]", "7d")
    assert "range=7d" in page.url
    expect(page.locator("select[name=range]")).to_have_value("7d")
    week_runs = int(page.get_by_test_id("runs").inner_text())
    assert 0 < week_runs < 60

    today = timezone.localdate()
    with page.expect_navigation():
        page.fill("input[name=from]", (today - timedelta(days=2)).isoformat())
    assert f"from={(today - timedelta(days=2)).isoformat()}" in page.url
    expect(page.locator("select[name=range]")).to_have_value("")  # a custom range now
    assert int(page.get_by_test_id("runs").inner_text()) <= week_runs
