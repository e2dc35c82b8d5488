"""The alert settings page (admins): channels, what each sends, and every delivery's fate."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.notify import services
from opsdash.notify.forms import ChannelForm
from opsdash.notify.mail import smtp_configured, smtp_summary
from opsdash.notify.models import Channel, ChannelKind, Delivery, Notification
from opsdash.typing import AuthedRequest

RECENT = 50


def _channel(pk: int) -> Channel:
    return get_object_or_404(Channel, pk=pk)


def _fields(form: ChannelForm) -> dict[str, Any]:
    data = form.cleaned_data
    return {
        "name": data["name"],
        "kind": data["kind"],
        "target": data["target"],
        "roles": data["roles"],
        "events": data["events"],
        "enabled": data["enabled"],
    }


def _page(
    request: AuthedRequest, *, form: ChannelForm | None = None, status: int = 200
) -> HttpResponse:
    notifications = Notification.objects.prefetch_related(
        Prefetch(
            "deliveries",
            queryset=Delivery.objects.order_by("id").prefetch_related("attempt_log"),
        )
    )[:RECENT]
    return render(
        request,
        "notify/index.html",
        {
            "channels": Channel.objects.all(),
            "form": form or ChannelForm(),
            "notifications": notifications,
            "smtp_configured": smtp_configured(),
            "smtp_summary": smtp_summary(),
            "email_kind": ChannelKind.EMAIL,
        },
        status=status,
    )


@requires(Cap.MANAGE_ALERTS)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    """Channels (add, edit, test, enable, delete) and the recent notifications' deliveries."""
    return _page(request)


@requires(Cap.MANAGE_ALERTS)
@require_POST
def create(request: AuthedRequest) -> HttpResponse:
    form = ChannelForm(request.POST)
    if form.is_valid():
        try:
            channel = services.create_channel(**_fields(form), user=request.user)
        except services.ChannelRefused as exc:
            form.add_error(exc.param if exc.param in form.fields else None, exc.reason)
        else:
            messages.success(request, f"Channel “{channel.name}” added.")
            return redirect("notify:index")
    return _page(request, form=form, status=400)


@requires(Cap.MANAGE_ALERTS)
@require_http_methods(["GET", "POST"])
def edit(request: AuthedRequest, pk: int) -> HttpResponse:
    channel = _channel(pk)
    if request.method == "POST":
        form = ChannelForm(request.POST)
        if form.is_valid():
            try:
                services.update_channel(channel=channel, **_fields(form), user=request.user)
            except services.ChannelRefused as exc:
                form.add_error(exc.param if exc.param in form.fields else None, exc.reason)
            else:
                messages.success(request, f"Channel “{channel.name}” saved.")
                return redirect("notify:index")
        status = 400
    else:
        form = ChannelForm(
            initial={
                "name": channel.name,
                "kind": channel.kind,
                "target": channel.target,
                "roles": channel.roles,
                "events": channel.events,
                "enabled": channel.enabled,
            }
        )
        status = 200
    return render(request, "notify/edit.html", {"channel": channel, "form": form}, status=status)


@requires(Cap.MANAGE_ALERTS)
@require_POST
def toggle(request: AuthedRequest, pk: int) -> HttpResponse:
    channel = _channel(pk)
    enabled = request.POST.get("enabled") == "1"
    services.set_channel_enabled(channel=channel, enabled=enabled, user=request.user)
    state = "enabled" if enabled else "disabled: it sends nothing until enabled again"
    messages.success(request, f"Channel “{channel.name}” {state}.")
    return redirect("notify:index")


@requires(Cap.MANAGE_ALERTS)
@require_POST
def rotate(request: AuthedRequest, pk: int) -> HttpResponse:
    channel = services.rotate_secret(channel=_channel(pk), user=request.user)
    messages.success(
        request,
        f"New signing secret for “{channel.name}”: give it to the receiver, the old one no "
        "longer verifies.",
    )
    return redirect(reverse("notify:index") + f"#channel-{channel.pk}")


@requires(Cap.MANAGE_ALERTS)
@require_POST
def delete(request: AuthedRequest, pk: int) -> HttpResponse:
    channel = _channel(pk)
    name = channel.name
    services.delete_channel(channel=channel, user=request.user)
    messages.success(request, f"Channel “{name}” deleted; its past deliveries stay listed.")
    return redirect("notify:index")


@requires(Cap.MANAGE_ALERTS)
@require_POST
def send_test(request: AuthedRequest, pk: int) -> HttpResponse:
    channel = _channel(pk)
    services.send_test(channel=channel, user=request.user)
    messages.info(
        request,
        f"Test message queued for “{channel.name}”; its delivery appears below in a moment.",
    )
    return redirect("notify:index")
