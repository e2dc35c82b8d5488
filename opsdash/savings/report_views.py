"""The scheduled reports page: subscribe yourself, admins manage everyone's, the sent list, and a
browser preview of the report email. Thin callers of ``opsdash.savings.scheduled``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.savings import scheduled
from opsdash.savings.days import report_zone
from opsdash.savings.models import ReportDelivery, ReportFrequency, ReportSubscription
from opsdash.typing import AuthedRequest

DELIVERIES_SHOWN = 100


def _subscription_for_admin(pk: int) -> ReportSubscription:
    return get_object_or_404(ReportSubscription.objects.select_related("user"), pk=pk)


def _savings_people() -> list[User]:
    """Who may receive a report: active users holding the savings capability."""
    users = User.objects.filter(is_active=True).filter(
        Q(is_superuser=True) | Q(groups__name__in=["admin", "manager"])
    )
    return [u for u in users.distinct().order_by("username") if can(u, Cap.VIEW_SAVINGS)]


@requires(Cap.VIEW_SAVINGS)
@require_GET
def reports_page(request: AuthedRequest) -> HttpResponse:
    mine = {
        s.frequency: s for s in ReportSubscription.objects.filter(user=request.user, active=True)
    }
    can_manage = can(request.user, Cap.MANAGE_ALERTS)
    context: dict[str, Any] = {
        "frequencies": [
            {
                "value": value,
                "label": label,
                "subscribed": value in mine,
                "period": scheduled.last_period(frequency=value),
            }
            for value, label in ReportFrequency.choices
        ],
        "email": (request.user.email or "").strip(),
        "can_manage": can_manage,
        "deliveries": ReportDelivery.objects.select_related("subscription__user")[
            :DELIVERIES_SHOWN
        ],
        "time_zone": settings.REPORT_TIME_ZONE,
    }
    if can_manage:
        context["subscriptions"] = ReportSubscription.objects.select_related("user")
        context["people"] = _savings_people()
    with timezone.override(report_zone()):
        return render(request, "savings/reports.html", context)


@requires(Cap.VIEW_SAVINGS)
@require_POST
def subscribe(request: AuthedRequest) -> HttpResponse:
    """Turn one's own weekly or monthly report on (``on=1``) or off."""
    frequency = request.POST.get("frequency", "")
    try:
        if request.POST.get("on") == "1":
            scheduled.subscribe_to_report(user=request.user, frequency=frequency, by=request.user)
            messages.success(request, f"You will receive the {frequency} report.")
        else:
            found = ReportSubscription.objects.filter(user=request.user, frequency=frequency)
            for subscription in found:
                scheduled.unsubscribe_from_report(subscription=subscription, by=request.user)
            messages.success(request, f"You will no longer receive the {frequency or ''} report.")
    except scheduled.ReportRefused as exc:
        messages.error(request, exc.reason)
    return redirect("savings:reports")


@requires(Cap.MANAGE_ALERTS)
@require_POST
def subscription_add(request: AuthedRequest) -> HttpResponse:
    """An admin subscribes someone else."""
    user = User.objects.filter(pk=request.POST.get("user") or 0).first()
    if user is None:
        messages.error(request, "Choose the person who should receive the report.")
        return redirect("savings:reports")
    try:
        scheduled.subscribe_to_report(
            user=user, frequency=request.POST.get("frequency", ""), by=request.user
        )
    except scheduled.ReportRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(request, f"{user.get_username()} will receive the report.")
    return redirect("savings:reports")


@requires(Cap.MANAGE_ALERTS)
@require_POST
def subscription_change(request: AuthedRequest, pk: int) -> HttpResponse:
    """An admin stops (``action=stop``) or resumes (``action=resume``) a subscription."""
    subscription = _subscription_for_admin(pk)
    try:
        if request.POST.get("action") == "resume":
            scheduled.subscribe_to_report(
                user=subscription.user, frequency=subscription.frequency, by=request.user
            )
        else:
            scheduled.unsubscribe_from_report(subscription=subscription, by=request.user)
    except scheduled.ReportRefused as exc:
        messages.error(request, exc.reason)
    return redirect("savings:reports")


@requires(Cap.VIEW_SAVINGS)
@require_GET
def preview(request: AuthedRequest) -> HttpResponse:
    """The HTML email of the last complete period, as a subscriber would receive it today."""
    frequency = request.GET.get("frequency", ReportFrequency.WEEKLY)
    if frequency not in ReportFrequency.values:
        return HttpResponse(
            f"A report is weekly or monthly, not {frequency!r}: use ?frequency=weekly or "
            "?frequency=monthly.",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    with timezone.override(report_zone()):
        rendered = scheduled.render_report(scheduled.build_report(frequency=frequency))
    return HttpResponse(rendered.html)
