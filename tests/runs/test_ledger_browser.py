"""The Runs page, a run's page and the history in Chromium at 1280 and 390 px, light and dark:
an admin filters with the form (the URL carries it), reads the totals, downloads the CSV."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from opsdash.runs.models import Run, RunSource, RunStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.factories import finished_run, local_model, workflow
from tests.savings.factories import price

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def runs(admin: User, operator: User) -> None:
    now = timezone.now()
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=now - timedelta(days=30))
    support = workflow("support-bot", "openai", "gpt-4o-mini", name="Support bot")
    notes = workflow("meeting-notes", name="Meeting notes")
    small, big = local_model("SmolLM2-135M"), local_model("Llama-3.2-1B")
    sources = [RunSource.PLAYGROUND, RunSource.API, RunSource.SUITE, RunSource.GATEWAY]
    for i in range(64):
        run = finished_run(
            support if i % 3 else notes,
            small if i % 2 else big,
            started_at=now - timedelta(hours=i),
            prompt_tokens=300 + 13 * i,
            completion_tokens=40 + 7 * i,
            status=RunStatus.ERROR if i % 9 == 0 else RunStatus.OK,
        )
        Run.objects.filter(pk=run.pk).update(
            source=sources[i % 4],
            user=None if i % 4 == 3 else (operator if i % 2 else admin),
            node="gpu-a" if i % 3 else "gpu-b",
            messages=[{"role": "user", "content": f"Summarise ticket {i}"}] if i % 2 else None,
            prompt="" if i % 2 else f"Write a haiku about ticket {i}",
            params={"max_tokens": 128, "temperature": 0.7, "seed": None},
        )


def _both_widths_and_themes(page: Page, name: str) -> None:
    """Screenshots at 1280 and 390 px, light and dark; none scrolls sideways."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
            screenshot(page, f"{name}-{width}-{scheme}")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_admin_filters_the_runs_reads_the_totals_and_takes_the_csv(
    page: Page, live_server, runs, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/runs/")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_test_id("total-runs")).to_have_text("64")
    expect(page.get_by_test_id("ledger").locator("tbody tr")).to_have_count(50)
    _both_widths_and_themes(page, "runs-ledger")

    page.select_option("select[name=workflow]", "support-bot")
    page.fill("input[name=user]", "otto")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(lambda url: "workflow=support-bot" in url and "user=otto" in url)
    expected = Run.objects.filter(workflow__slug="support-bot", user__username="otto")
    expect(page.get_by_test_id("total-runs")).to_have_text(str(expected.count()))
    rows = page.get_by_test_id("ledger").locator("tbody tr")
    expect(rows).to_have_count(expected.count())
    expect(rows.first).to_contain_text("otto")
    expect(rows.first).not_to_contain_text("{'role'")
    _both_widths_and_themes(page, "runs-ledger-filtered")

    with page.expect_download() as download:
        page.get_by_test_id("csv").click()
    path = tmp_path / "runs.csv"
    download.value.save_as(path)
    lines = list(csv.reader(path.open()))
    assert lines[-1][0] == "TOTAL" and len(lines) - 2 == expected.count()

    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Run ")).to_be_visible()
    expect(page.get_by_test_id("params")).to_contain_text("Max tokens")
    expect(page.get_by_test_id("params")).not_to_contain_text("None")
    _both_widths_and_themes(page, "runs-run-page")


def test_history_in_the_browser_reads_prompts_as_text(page: Page, live_server, runs) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, live_server.url, "otto")
    page.goto(f"{live_server.url}/playground/history/")
    expect(page.get_by_test_id("history-scope")).to_contain_text("Your runs only")
    expect(page.locator("table")).to_contain_text("user: Summarise ticket")
    expect(page.locator("table")).not_to_contain_text("{'role'")
    _both_widths_and_themes(page, "runs-history")
