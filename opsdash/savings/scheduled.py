"""Scheduled savings reports: who gets them, building one for a period, and sending what is due.

``send_due_reports`` is what ``manage.py send_reports`` runs (from cron or a systemd timer): for
each active subscription it sends the last *complete* period (weekly: Monday–Sunday of last week;
monthly: last calendar month, in the report time zone) once. The claim on a delivery row is
taken before the mail goes out, so two overlapping runs cannot both send it; a failed delivery
keeps its sentence and the next run tries it again.

A report reads the same aggregation as the pages (``reports.aggregate``), the forecast and the
CSV export, so its figures equal what the savings page shows for that range.
"""

from __future__ import annotations

import calendar
import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from opsdash.accounts.roles import Cap, can
from opsdash.catalog.models import LocalModel
from opsdash.core.audit import Target
from opsdash.core.errors import Code, Refusal
from opsdash.notify.mail import MailFailed, absolute_url, send_email
from opsdash.runs.models import Workflow
from opsdash.savings import export
from opsdash.savings.days import report_today
from opsdash.savings.filters import Filters
from opsdash.savings.forecast import Forecast, forecast
from opsdash.savings.models import (
    DeliveryStatus,
    ReportDelivery,
    ReportFrequency,
    ReportSubscription,
    SavingsAction,
)
from opsdash.savings.money import format_usd
from opsdash.savings.pricebook import audit
from opsdash.savings.reports import Figures, aggregate, total_of

TOP_MODELS = 5
# A claim older than this is a run that died while sending: the next run may take it over.
STALE_CLAIM = timedelta(minutes=30)


class ReportRefused(Refusal):
    """A subscription change that cannot be made; the sentence says why."""


# ----------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def label(self) -> str:
        if self.start.day == 1 and self.end.day == _month_days(self.end):
            return self.start.strftime("%B %Y")
        if self.start.year != self.end.year:
            return f"{self.start:%-d %b %Y} – {self.end:%-d %b %Y}"
        if self.start.month != self.end.month:
            return f"{self.start:%-d %b} – {self.end:%-d %b %Y}"
        return f"{self.start:%-d}–{self.end:%-d %b %Y}"

    def query(self) -> str:
        return f"from={self.start.isoformat()}&to={self.end.isoformat()}"


def _month_days(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def last_period(*, frequency: str, today: date | None = None) -> Period:
    """The last complete period before ``today`` (a report day): weekly, Monday–Sunday of the
    week before this one; monthly, the calendar month before this one."""
    today = today or report_today()
    if frequency == ReportFrequency.WEEKLY:
        this_monday = today - timedelta(days=today.weekday())
        return Period(this_monday - timedelta(days=7), this_monday - timedelta(days=1))
    if frequency == ReportFrequency.MONTHLY:
        end = today.replace(day=1) - timedelta(days=1)
        return Period(end.replace(day=1), end)
    raise ReportRefused(f"A report is weekly or monthly, not {frequency!r}.", param="frequency")


def period_before(period: Period, *, frequency: str) -> Period:
    """The period of the same kind just before ``period``."""
    return last_period(frequency=frequency, today=period.start)


# ----------------------------------------------------------------------------- building


@dataclass(frozen=True)
class WorkflowChange:
    workflow: Workflow
    figures: Figures
    previous: Figures

    @property
    def net_change_percent(self) -> float | None:
        return _percent(self.figures.net_nusd, self.previous.net_nusd)


def _percent(now: int, before: int) -> float | None:
    return (now - before) * 100 / abs(before) if before else None


@dataclass
class ScheduledReport:
    frequency: str
    period: Period
    previous_period: Period
    totals: Figures
    previous_totals: Figures
    workflows: list[WorkflowChange]
    top_models: list[tuple[LocalModel, Figures]]
    forecast: Forecast
    csv_name: str
    csv_bytes: bytes
    links: dict[str, str] = field(default_factory=dict)

    @property
    def net_change_percent(self) -> float | None:
        return _percent(self.totals.net_nusd, self.previous_totals.net_nusd)

    @property
    def avoided_change_percent(self) -> float | None:
        return _percent(self.totals.avoided_nusd, self.previous_totals.avoided_nusd)

    @property
    def subject(self) -> str:
        return (
            f"OpsDash savings, {self.period.label}: {format_usd(self.totals.net_nusd)} net "
            f"({format_usd(self.totals.avoided_nusd)} API spend avoided)"
        )


def period_csv(period: Period) -> bytes:
    """The period's CSV export, exactly as ``/api/savings/export.csv`` writes it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(export.csv_rows(Filters(start=period.start, end=period.end)))
    return buffer.getvalue().encode()


def build_report(*, frequency: str, today: date | None = None) -> ScheduledReport:
    """The report for the last complete period before ``today``: totals and each workflow
    against the period before, the top local models by avoided spend, this month's forecast
    and the period's CSV."""
    today = today or report_today()
    period = last_period(frequency=frequency, today=today)
    previous = period_before(period, frequency=frequency)

    def per_workflow(span: Period) -> dict[int, Figures]:
        grouped = aggregate(start=span.start, end=span.end, by=("workflow",))
        return {key[0]: figures for key, figures in grouped.items()}

    now_by, before_by = per_workflow(period), per_workflow(previous)
    flows = Workflow.objects.in_bulk(set(now_by) | set(before_by))
    changes = [
        WorkflowChange(
            workflow=flow,
            figures=now_by.get(pk) or Figures(),
            previous=before_by.get(pk) or Figures(),
        )
        for pk, flow in flows.items()
    ]
    changes.sort(key=lambda c: (-c.figures.net_nusd, -c.figures.runs, c.workflow.name))
    by_model = aggregate(start=period.start, end=period.end, by=("model",))
    models = LocalModel.objects.in_bulk([key[0] for key in by_model])
    top = sorted(
        ((models[key[0]], figures) for key, figures in by_model.items()),
        key=lambda pair: (-pair[1].avoided_nusd, -pair[1].runs, pair[0].name),
    )[:TOP_MODELS]
    return ScheduledReport(
        frequency=frequency,
        period=period,
        previous_period=previous,
        totals=total_of(now_by.values()),
        previous_totals=total_of(before_by.values()),
        workflows=changes,
        top_models=top,
        forecast=forecast(today=today),
        csv_name=f"opsdash-savings-{period.start}-{period.end}.csv",
        csv_bytes=period_csv(period),
        links={
            "period": absolute_url(f"{reverse('savings:index')}?{period.query()}"),
            "savings": absolute_url(reverse("savings:index")),
            "reports": absolute_url(reverse("savings:reports")),
        },
    )


@dataclass(frozen=True)
class RenderedReport:
    subject: str
    text: str
    html: str


def render_report(report: ScheduledReport) -> RenderedReport:
    context: dict[str, Any] = {"report": report, "forecast": report.forecast}
    return RenderedReport(
        subject=report.subject,
        text=render_to_string("savings/email/report.txt", context),
        html=render_to_string("savings/email/report.html", context),
    )


# ----------------------------------------------------------------------------- subscriptions


def subscribe_to_report(*, user: User, frequency: str, by: User) -> ReportSubscription:
    """Start (or resume) ``user``'s report of ``frequency``; audited."""
    if frequency not in ReportFrequency.values:
        raise ReportRefused(f"A report is weekly or monthly, not {frequency!r}.", param="frequency")
    if not user.is_active or not can(user, Cap.VIEW_SAVINGS):
        raise ReportRefused(
            f"{user.get_username()} may not see savings (give them the manager or admin role "
            "first), so they cannot receive the report.",
            code=Code.CONFLICT,
        )
    with transaction.atomic():
        subscription, created = ReportSubscription.objects.get_or_create(
            user=user, frequency=frequency, defaults={"created_by": by}
        )
        if not created and subscription.active:
            return subscription
        if not created:
            subscription.active = True
            subscription.save(update_fields=["active"])
        _audit(SavingsAction.SUBSCRIBE_REPORT, subscription, by)
    return subscription


def unsubscribe_from_report(*, subscription: ReportSubscription, by: User) -> None:
    """Stop a report; its deliveries stay listed. Audited."""
    if not subscription.active:
        return
    with transaction.atomic():
        subscription.active = False
        subscription.save(update_fields=["active"])
        _audit(SavingsAction.UNSUBSCRIBE_REPORT, subscription, by)


def _audit(action: SavingsAction, subscription: ReportSubscription, by: User) -> None:
    who = subscription.user.get_username()
    audit(
        action=action,
        actor=by,
        target=Target.of(subscription, type="report", label=f"{subscription.frequency}: {who}"),
        detail=f"{subscription.frequency} savings report for {who}",
    )


# ----------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class SendOutcome:
    subscription: ReportSubscription
    period: Period
    status: str  # sent, failed, skipped, or "would send" (dry run)
    message: str

    def line(self) -> str:
        user = self.subscription.user
        who = f"{user.get_username()} <{user.email}>" if user.email else user.get_username()
        return (
            f"{self.status}: {self.subscription.frequency} report {self.period.start}…"
            f"{self.period.end} to {who}: {self.message}"
        )


def _claim(
    subscription: ReportSubscription, period: Period, recipient: str, now: datetime
) -> ReportDelivery | None:
    """Take the period's delivery row for this run, or None: sent, or another run has it."""
    try:
        with transaction.atomic():
            return ReportDelivery.objects.create(
                subscription=subscription,
                period_start=period.start,
                period_end=period.end,
                status=DeliveryStatus.SENDING,
                recipient=recipient,
                attempts=1,
                updated_at=now,
            )
    except IntegrityError:
        pass
    retry = Q(status=DeliveryStatus.FAILED) | Q(
        status=DeliveryStatus.SENDING, updated_at__lt=now - STALE_CLAIM
    )
    rows = ReportDelivery.objects.filter(
        retry, subscription=subscription, period_start=period.start
    )
    taken = rows.update(
        status=DeliveryStatus.SENDING,
        recipient=recipient,
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if not taken:
        return None
    return ReportDelivery.objects.get(subscription=subscription, period_start=period.start)


def _skip_reason(subscription: ReportSubscription, period: Period) -> str:
    user = subscription.user
    if not user.is_active or not can(user, Cap.VIEW_SAVINGS):
        return f"{user.get_username()} may no longer see savings; stop or reassign the report."
    if not (user.email or "").strip():
        return (
            f"{user.get_username()} has no email address; an admin sets one on the user's "
            "account, and the next run sends it."
        )
    sent = ReportDelivery.objects.filter(
        subscription=subscription, period_start=period.start, status=DeliveryStatus.SENT
    ).first()
    if sent is not None and sent.sent_at is not None:
        return f"already sent on {timezone.localtime(sent.sent_at):%Y-%m-%d %H:%M}."
    return ""


def send_due_reports(
    *,
    frequency: str | None = None,
    today: date | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[SendOutcome]:
    """Send each active subscription's last complete period if it was not sent yet (of one
    ``frequency`` when given). One outcome per subscription; mail failures are recorded on the
    delivery with their sentence, never raised."""
    today = today or report_today()
    frequencies = [frequency] if frequency else list(ReportFrequency.values)
    for name in frequencies:
        last_period(frequency=name, today=today)  # refuses an unknown frequency
    subscriptions = (
        ReportSubscription.objects.filter(active=True, frequency__in=frequencies)
        .select_related("user")
        .order_by("frequency", "user__username")
    )
    built: dict[str, tuple[ScheduledReport, RenderedReport]] = {}
    outcomes = []
    for subscription in subscriptions:
        period = last_period(frequency=subscription.frequency, today=today)
        skip = _skip_reason(subscription, period)
        if skip:
            outcomes.append(SendOutcome(subscription, period, "skipped", skip))
            continue
        if dry_run:
            outcomes.append(SendOutcome(subscription, period, "would send", "dry run"))
            continue
        if subscription.frequency not in built:
            report = build_report(frequency=subscription.frequency, today=today)
            built[subscription.frequency] = (report, render_report(report))
        report, rendered = built[subscription.frequency]
        outcomes.append(_send_one(subscription, period, report, rendered, now=now))
    return outcomes


def _send_one(
    subscription: ReportSubscription,
    period: Period,
    report: ScheduledReport,
    rendered: RenderedReport,
    *,
    now: datetime | None,
) -> SendOutcome:
    recipient = subscription.user.email.strip()
    delivery = _claim(subscription, period, recipient, now or timezone.now())
    if delivery is None:
        return SendOutcome(subscription, period, "skipped", "another send_reports run has it.")
    try:
        send_email(
            to=[recipient],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            attachments=[(report.csv_name, report.csv_bytes, "text/csv")],
        )
    except MailFailed as exc:
        delivery.status, delivery.error = DeliveryStatus.FAILED, exc.reason[:500]
        delivery.updated_at = timezone.now()
        delivery.save(update_fields=["status", "error", "updated_at"])
        return SendOutcome(subscription, period, "failed", exc.reason)
    delivery.status, delivery.error = DeliveryStatus.SENT, ""
    delivery.sent_at = delivery.updated_at = timezone.now()
    delivery.save(update_fields=["status", "error", "sent_at", "updated_at"])
    return SendOutcome(subscription, period, "sent", rendered.subject)
