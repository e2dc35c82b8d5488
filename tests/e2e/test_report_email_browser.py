"""The scheduled report as its recipient sees it: the HTML a real SMTP server received, opened
in Chromium at a desktop and a phone width, readable without its own style sheet or scripts."""

from __future__ import annotations

import email.policy
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page

from opsdash.savings.scheduled import send_due_reports, subscribe_to_report
from tests.e2e.conftest import screenshot
from tests.factories import finished_run, local_model, workflow
from tests.notify.conftest import Mailbox, smtp  # noqa: F401  (the real SMTP server fixture)
from tests.savings.factories import price

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
TODAY = date(2025, 3, 5)  # last week: 24 Feb – 2 Mar


def _html_of(box: Mailbox) -> str:
    assert len(box.messages) == 1, "one report was sent"
    parsed = message_from_bytes(box.messages[0].as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None, "the report has an HTML part"
    return str(body.get_content())


def test_the_received_report_reads_well_at_1280_and_390_px(  # type: ignore[no-untyped-def]
    smtp: Mailbox,  # noqa: F811
    manager,
    page: Page,
) -> None:
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=datetime(2025, 1, 1, tzinfo=UTC))
    support = workflow("support-bot", "openai", "gpt-4o-mini", name="Support bot")
    triage = workflow("triage", "openai", "gpt-4o-mini", name="Ticket triage")
    big, small = local_model("Llama-3.2-1B"), local_model("SmolLM2-135M")
    for day in (24, 25, 26, 27):
        finished_run(support, big, started_at=datetime(2025, 2, day, 10, tzinfo=UTC))
    finished_run(triage, small, started_at=datetime(2025, 3, 1, 9, tzinfo=UTC))
    finished_run(support, big, started_at=datetime(2025, 2, 18, 10, tzinfo=UTC))  # week before
    manager.email = "mona@example.test"
    manager.save(update_fields=["email"])
    subscribe_to_report(user=manager, frequency="weekly", by=manager)

    send_due_reports(frequency="weekly", today=TODAY)
    html = _html_of(smtp)

    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.set_content(html)
        text = page.inner_text("body")
        for expected in ("Support bot", "Ticket triage", "Llama-3.2-1B", "Net saving"):
            assert expected in text, f"{expected!r} is shown at {width} px"
        assert page.locator("[data-figure=net]").inner_text().startswith("$")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        screenshot(page, f"report-email-{width}")
        assert overflow <= 0, f"the report scrolls sideways by {overflow} px at {width} px"
