"""Scheduled reports: periods, the email a real SMTP server receives, once-only delivery and
retry, ``manage.py send_reports`` and the reports page."""

from __future__ import annotations

import csv
import io
import socket
from datetime import UTC, date, datetime
from email.header import decode_header, make_header
from email.message import Message

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from opsdash.core.models import AuditEntry
from opsdash.runs.models import Workflow
from opsdash.savings.days import report_day
from opsdash.savings.models import DeliveryStatus, ReportDelivery, ReportSubscription
from opsdash.savings.scheduled import (
    Period,
    build_report,
    last_period,
    send_due_reports,
    subscribe_to_report,
)
from tests.factories import finished_run, local_model, workflow
from tests.notify.conftest import Mailbox, smtp  # noqa: F401  (the real SMTP server fixture)
from tests.savings.factories import price

pytestmark = pytest.mark.django_db
TODAY = date(2025, 3, 5)  # a Wednesday: last week is 24 Feb – 2 Mar, last month February


def test_weekly_is_monday_to_sunday_of_last_week_and_monthly_last_calendar_month() -> None:
    assert last_period(frequency="weekly", today=TODAY) == Period(
        date(2025, 2, 24), date(2025, 3, 2)
    )
    assert last_period(frequency="weekly", today=date(2025, 3, 3)) == Period(
        date(2025, 2, 24), date(2025, 3, 2)
    )  # on a Monday, the week just ended
    assert last_period(frequency="monthly", today=TODAY) == Period(
        date(2025, 2, 1), date(2025, 2, 28)
    )
    assert last_period(frequency="monthly", today=date(2025, 1, 1)) == Period(
        date(2024, 12, 1), date(2024, 12, 31)
    )
    assert last_period(frequency="monthly", today=TODAY).label == "February 2025"


def test_periods_follow_the_report_time_zone_not_utc(settings) -> None:  # type: ignore[no-untyped-def]
    settings.REPORT_TIME_ZONE = "America/Los_Angeles"
    # Monday 3 March 05:00 UTC is still Sunday 2 March in Los Angeles: that week is not over.
    sunday_night = datetime(2025, 3, 3, 5, 0, tzinfo=UTC)
    assert report_day(sunday_night) == date(2025, 3, 2)
    assert last_period(frequency="weekly", today=report_day(sunday_night)) == Period(
        date(2025, 2, 17), date(2025, 2, 23)
    )
    # 1 April 03:00 UTC is 31 March there: the last complete month is February.
    assert last_period(frequency="monthly", today=report_day(datetime(2025, 4, 1, 3, tzinfo=UTC)))
    assert last_period(
        frequency="monthly", today=report_day(datetime(2025, 4, 1, 3, tzinfo=UTC))
    ) == Period(date(2025, 2, 1), date(2025, 2, 28))

    # A run late on Sunday 2 March, Los Angeles time (Monday in UTC), is in that week's report.
    flow = _priced_flow()
    finished_run(flow, local_model(), started_at=sunday_night)
    report = build_report(frequency="weekly", today=TODAY)
    assert report.period == Period(date(2025, 2, 24), date(2025, 3, 2))
    assert report.totals.runs == 1


def _priced_flow(slug: str = "support") -> Workflow:
    price("openai", "gpt-4o-mini", "1.00", "2.00", start=datetime(2025, 1, 1, tzinfo=UTC))
    return workflow(slug, "openai", "gpt-4o-mini")


def _last_week_runs() -> Workflow:
    """Runs in the week 24 Feb – 2 Mar (reported) and the week before (compared against)."""
    flow = _priced_flow()
    other = workflow("triage", "openai", "gpt-4o-mini")
    big, small = local_model("big-model"), local_model("small-model")
    for day in (24, 25, 26):
        finished_run(flow, big, started_at=datetime(2025, 2, day, 10, tzinfo=UTC))
    finished_run(other, small, started_at=datetime(2025, 3, 2, 10, tzinfo=UTC), prompt_tokens=10)
    finished_run(flow, big, started_at=datetime(2025, 2, 18, 10, tzinfo=UTC))  # the week before
    finished_run(flow, big, started_at=datetime(2025, 3, 4, 10, tzinfo=UTC))  # this week: not yet
    return flow


def _subscribed(user: User, frequency: str = "weekly", email: str = "") -> ReportSubscription:
    if email:
        user.email = email
        user.save(update_fields=["email"])
    return subscribe_to_report(user=user, frequency=frequency, by=user)


def _csv_of(message: Message) -> tuple[str, list[dict[str, str]]]:
    for part in message.walk():
        if part.get_content_type() == "text/csv":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return part.get_filename() or "", list(csv.DictReader(io.StringIO(payload.decode())))
    raise AssertionError("the message has no CSV attachment")


def _part(message: Message, content_type: str) -> str:
    for part in message.walk():
        if part.get_content_type() == content_type and not part.get_filename():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError(f"the message has no {content_type} part")


def test_the_report_email_reaches_a_real_smtp_server_with_its_csv(  # type: ignore[no-untyped-def]
    smtp: Mailbox,  # noqa: F811
    manager,
) -> None:
    _last_week_runs()
    _subscribed(manager, email="mona@example.test")
    out = io.StringIO()

    call_command("send_reports", "--today", TODAY.isoformat(), stdout=out)

    assert "sent: weekly report 2025-02-24…2025-03-02 to mona <mona@example.test>" in out.getvalue()
    assert len(smtp.messages) == 1
    message = smtp.messages[0]
    assert smtp.envelopes[0][1] == ["mona@example.test"]
    assert "24 Feb – 2 Mar 2025" in str(make_header(decode_header(message["Subject"])))
    name, rows = _csv_of(message)
    assert name == "opsdash-savings-2025-02-24-2025-03-02.csv"
    total = rows[-1]
    assert total["day"] == "TOTAL"
    client = Client()
    client.force_login(manager)
    summary = client.get("/api/savings/summary?from=2025-02-24&to=2025-03-02").json()
    assert total["avoided_usd"] == summary["avoided_usd"]
    assert total["net_usd"] == summary["net_usd"]
    assert total["local_cost_usd"] == summary["local_cost_usd"]
    assert int(total["runs"]) == summary["runs"] == 4
    html, text = _part(message, "text/html"), _part(message, "text/plain")
    assert "<link" not in html and "<style" not in html  # inline CSS only for mail clients
    for body in (html, text):
        assert "Support" in body and "Triage" in body  # by workflow
        assert "big-model" in body and "small-model" in body  # top local models
        assert "Forecast for March 2025" in body
    # The period before (17–23 Feb: one run of Support) is what the change is against.
    assert "17–23 Feb 2025" in html
    delivery = ReportDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.recipient == "mona@example.test"
    assert (delivery.period_start, delivery.period_end) == (date(2025, 2, 24), date(2025, 3, 2))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_failed_report_is_retried_and_a_sent_one_never_sent_twice(  # type: ignore[no-untyped-def]
    smtp: Mailbox,  # noqa: F811
    settings,
    manager,
) -> None:
    _last_week_runs()
    _subscribed(manager, email="mona@example.test")
    working_port = settings.SMTP_PORT
    settings.SMTP_PORT = _closed_port()

    with pytest.raises(CommandError, match="retried on the next run"):
        call_command("send_reports", "--today", TODAY.isoformat(), stdout=io.StringIO())
    failed = ReportDelivery.objects.get()
    assert failed.status == DeliveryStatus.FAILED
    assert "Cannot reach the SMTP server" in failed.error and smtp.messages == []

    settings.SMTP_PORT = working_port
    [outcome] = send_due_reports(today=TODAY, frequency="weekly")
    assert outcome.status == "sent"
    again = send_due_reports(today=TODAY, frequency="weekly")
    assert [o.status for o in again] == ["skipped"] and "already sent" in again[0].message

    assert len(smtp.messages) == 1
    delivery = ReportDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2 and not delivery.error
    # The next week is a new period: sent again.
    assert [o.status for o in send_due_reports(today=date(2025, 3, 10))] == ["sent"]
    assert len(smtp.messages) == 2


def test_someone_without_an_email_is_skipped_with_a_sentence(  # type: ignore[no-untyped-def]
    smtp: Mailbox,  # noqa: F811
    manager,
    admin,
) -> None:
    _subscribed(manager, frequency="monthly")
    _subscribed(admin, frequency="monthly", email="ada@example.test")
    out = io.StringIO()

    call_command("send_reports", "--today", TODAY.isoformat(), "--frequency", "monthly", stdout=out)

    lines = out.getvalue().splitlines()
    assert any(
        line.startswith("skipped: monthly report 2025-02-01…2025-02-28 to mona")
        and "has no email address" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("sent: monthly report") and "ada@example.test" in line for line in lines
    )
    assert [m["To"] for m in smtp.messages] == ["ada@example.test"]
    assert ReportDelivery.objects.filter(subscription__user=manager).count() == 0


def test_a_dry_run_sends_nothing(smtp: Mailbox, manager) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _subscribed(manager, email="mona@example.test")
    out = io.StringIO()
    call_command("send_reports", "--dry-run", "--today", TODAY.isoformat(), stdout=out)
    assert "would send: weekly report 2025-02-24…2025-03-02" in out.getvalue()
    assert smtp.messages == [] and not ReportDelivery.objects.exists()


def test_the_help_shows_a_cron_line_and_a_systemd_timer(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        call_command("send_reports", "--help")
    shown = capsys.readouterr().out
    assert "manage.py send_reports" in shown and "15 6 * * *" in shown
    assert "OnCalendar=*-*-* 06:15" in shown and "--dry-run" in shown


# ----------------------------------------------------------------------------- the page


def test_a_manager_subscribes_and_sees_the_sent_list(manager) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(manager)

    page = client.get("/savings/reports/")
    assert page.status_code == 200
    assert b'data-testid="no-email"' in page.content  # no address yet: said so
    assert b"Everyone's reports" not in page.content  # admins only

    response = client.post("/savings/reports/subscribe/", {"frequency": "monthly", "on": "1"})
    assert response.status_code == 302
    assert ReportSubscription.objects.get(user=manager).frequency == "monthly"
    entry = AuditEntry.objects.filter(action="report.subscribe").get()
    assert entry.actor == manager and "mona" in entry.target_label

    client.post("/savings/reports/subscribe/", {"frequency": "monthly", "on": "0"})
    assert not ReportSubscription.objects.get(user=manager).active
    assert AuditEntry.objects.filter(action="report.unsubscribe").count() == 1

    manager.email = "mona@example.test"
    manager.save(update_fields=["email"])
    page = client.get("/savings/reports/")
    assert b"mona@example.test" in page.content

    # Only admins manage other people's reports.
    assert client.post("/savings/reports/subscriptions/add/", {}).status_code == 403


def test_the_sent_list_shows_when_to_whom_the_period_and_status(  # type: ignore[no-untyped-def]
    smtp: Mailbox,  # noqa: F811
    manager,
) -> None:
    _subscribed(manager, email="mona@example.test")
    send_due_reports(today=TODAY)
    client = Client()
    client.force_login(manager)
    page = client.get("/savings/reports/").content.decode()
    assert "mona &lt;mona@example.test&gt;" in page
    assert "2025-02-24 – 2025-03-02" in page and "status-delivery-sent" in page


def test_an_admin_manages_everyones_reports(admin, manager, operator) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(admin)

    client.post("/savings/reports/subscriptions/add/", {"user": manager.pk, "frequency": "weekly"})
    subscription = ReportSubscription.objects.get(user=manager)
    assert subscription.active and subscription.created_by == admin

    response = client.post(
        "/savings/reports/subscriptions/add/",
        {"user": operator.pk, "frequency": "weekly"},
        follow=True,
    )
    assert b"otto may not see savings" in response.content
    assert not ReportSubscription.objects.filter(user=operator).exists()

    client.post(f"/savings/reports/subscriptions/{subscription.pk}/", {"action": "stop"})
    subscription.refresh_from_db()
    assert not subscription.active
    page = client.get("/savings/reports/").content.decode()
    assert "Everyone's reports" in page and "stopped" in page


def test_the_preview_renders_last_periods_email_in_the_browser(manager) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(manager)
    response = client.get("/savings/reports/preview/?frequency=monthly")
    assert response.status_code == 200
    period = last_period(frequency="monthly")
    assert period.label.encode() in response.content
    assert b"Top local models by avoided spend" in response.content
    bad = client.get("/savings/reports/preview/?frequency=daily")
    assert bad.status_code == 400 and b"weekly or monthly" in bad.content


def test_people_without_savings_access_cannot_see_reports(operator) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(operator)
    assert client.get("/savings/reports/").status_code == 403
    assert client.get("/savings/reports/preview/").status_code == 403
