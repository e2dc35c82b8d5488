"""The alert settings page: admins only; channels added, edited, tested, rotated, deleted."""

from __future__ import annotations

import pytest

from opsdash.core.audit import entries
from opsdash.notify import sender
from opsdash.notify.models import Channel, Delivery, DeliveryStatus
from opsdash.notify.services import EventKind, emit
from tests.fixtures.personas import client_for

pytestmark = pytest.mark.django_db


def _add(client, **fields):  # type: ignore[no-untyped-def]
    data = {"name": "ops hook", "kind": "webhook", "target": "https://hooks.example.com/x"}
    data |= {"events": ["budget", "node"], "enabled": "on"} | fields
    return client.post("/notifications/channels/", data)


@pytest.mark.parametrize("persona", ["operator", "manager"])
def test_only_admins_see_the_alert_settings(persona, request):  # type: ignore[no-untyped-def]
    client = client_for(request.getfixturevalue(persona))
    assert client.get("/notifications/").status_code == 403
    assert _add(client).status_code == 403
    assert not Channel.objects.exists()


def test_an_admin_adds_a_webhook_channel_and_the_change_is_audited(as_admin):  # type: ignore[no-untyped-def]
    response = _add(as_admin)

    assert response.status_code == 302
    channel = Channel.objects.get()
    assert channel.events == ["budget", "node"] and channel.enabled
    assert len(channel.secret) >= 40
    page = as_admin.get("/notifications/").content.decode()
    assert "ops hook" in page and "https://hooks.example.com/x" in page
    assert channel.secret in page  # admins read the signing secret here
    assert [e.action for e in entries(action="alert_channel")] == ["alert_channel.create"]


def test_a_bad_channel_is_refused_with_a_sentence(as_admin):  # type: ignore[no-untyped-def]
    response = _add(as_admin, target="hooks.example.com")
    assert response.status_code == 400
    assert "must start with https://" in response.content.decode()

    response = _add(as_admin, kind="email", target="not an address")
    assert response.status_code == 400
    assert "is not an email address" in response.content.decode()
    assert not Channel.objects.exists()


def test_the_page_says_when_smtp_is_not_configured(as_admin, settings):  # type: ignore[no-untyped-def]
    settings.SMTP_HOST = ""
    _add(as_admin, kind="email", target="ops@example.com")
    page = as_admin.get("/notifications/").content.decode()
    assert "SMTP is not configured: set OPSDASH_SMTP_HOST" in page

    settings.SMTP_HOST, settings.SMTP_PORT = "mail.example.com", 587
    page = as_admin.get("/notifications/").content.decode()
    assert "Mail goes through mail.example.com:587" in page


def test_edit_disable_rotate_and_delete(as_admin):  # type: ignore[no-untyped-def]
    _add(as_admin)
    channel = Channel.objects.get()
    old_secret = channel.secret

    assert as_admin.get(f"/notifications/channels/{channel.pk}/").status_code == 200
    as_admin.post(
        f"/notifications/channels/{channel.pk}/",
        {
            "name": "renamed",
            "kind": "slack",
            "target": "https://hooks.slack.com/T/1",
            "events": ["telemetry"],
            "enabled": "on",
        },
    )
    as_admin.post(f"/notifications/channels/{channel.pk}/toggle", {"enabled": "0"})
    as_admin.post(f"/notifications/channels/{channel.pk}/rotate")
    channel.refresh_from_db()
    assert (channel.name, channel.kind, channel.events) == ("renamed", "slack", ["telemetry"])
    assert not channel.enabled and channel.secret != old_secret

    # A disabled channel takes nothing.
    emit(kind=EventKind.TELEMETRY, key="telemetry:1", subject="s", message="m")
    assert not Delivery.objects.exists()

    as_admin.post(f"/notifications/channels/{channel.pk}/delete")
    assert not Channel.objects.exists()
    assert [e.action for e in entries(action="alert_channel").order_by("at", "id")] == [
        "alert_channel.create",
        "alert_channel.update",
        "alert_channel.update",
        "alert_channel.update",
        "alert_channel.delete",
    ]


def test_send_a_test_reaches_that_channel_only_and_the_page_shows_the_delivery(as_admin, receiver):  # type: ignore[no-untyped-def]
    _add(as_admin, target=receiver.url, events=[])
    _add(as_admin, name="other", target=receiver.url + "/other")
    channel = Channel.objects.get(name="ops hook")

    as_admin.post(f"/notifications/channels/{channel.pk}/test")
    sender.deliver_due()

    [request] = receiver.requests
    assert request.json()["event"] == "test"
    assert request.headers["x-opsdash-event"] == "test"
    delivery = Delivery.objects.get()
    assert delivery.channel == channel and delivery.status == DeliveryStatus.SENT
    page = as_admin.get("/notifications/").content.decode()
    assert "Test message for ops hook" in page
    assert "notify-status-sent" in page and "HTTP 200" in page


def test_a_failed_delivery_shows_its_error_and_code(as_admin, receiver):  # type: ignore[no-untyped-def]
    receiver.statuses = [500]
    _add(as_admin, target=receiver.url)
    emit(kind=EventKind.BUDGET, key="budget:9:2026-01-01:50", subject="Half", message="50 %")
    sender.deliver_due()

    page = as_admin.get("/notifications/").content.decode()
    assert "notify-status-pending" in page and "HTTP 500" in page
    assert "The receiver answered 500" in page


def test_an_email_channel_can_mail_a_role(as_admin):  # type: ignore[no-untyped-def]
    response = _add(as_admin, kind="email", target="", roles=["manager"])
    assert response.status_code == 302
    assert Channel.objects.get().roles == ["manager"]
