"""The sender: webhooks signed and retried, email through a real SMTP server, the claims."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections
from django.utils import timezone

from opsdash.notify import sender
from opsdash.notify.models import Channel, Delivery, DeliveryAttempt, DeliveryStatus
from opsdash.notify.services import EventKind, emit
from opsdash.notify.webhooks import verify_signature

pytestmark = pytest.mark.django_db


def _hook(url: str, kind: str = "webhook") -> Channel:
    return Channel.objects.create(name=f"{kind} hook", kind=kind, target=url, events=["budget"])


def _budget_alert(key: str = "budget:3:2026-05-01:80") -> None:
    emit(
        kind=EventKind.BUDGET,
        key=key,
        subject="Support bot at 80 % of its monthly budget",
        message="Support bot used 80 % of 1,000,000 tokens; it resets on 1 June.",
        link="/savings/workflows/support/",
        data={"percent": 80, "workflow": "support"},
    )


def test_a_webhook_receives_the_signed_json_and_the_signature_verifies(receiver, settings):  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = "https://ops.example.com"
    channel = _hook(receiver.url)
    _budget_alert()

    assert sender.deliver_due() == 1

    [request] = receiver.requests
    headers = request.headers
    body = request.json()
    assert headers["x-opsdash-event"] == "budget"
    assert headers["x-opsdash-delivery"] == str(Delivery.objects.get().pk)
    assert body["event"] == "budget" and body["key"] == "budget:3:2026-05-01:80"
    assert body["link"] == "https://ops.example.com/savings/workflows/support/"
    assert body["data"] == {"percent": 80, "workflow": "support"}
    assert {"id", "subject", "message", "created_at"} <= set(body)
    assert verify_signature(
        channel.secret,
        headers["x-opsdash-timestamp"],
        request.body,
        headers["x-opsdash-signature"],
        max_age_seconds=300,
    )
    # A tampered body, another secret or an old timestamp do not verify.
    ts, sig = headers["x-opsdash-timestamp"], headers["x-opsdash-signature"]
    assert not verify_signature(channel.secret, ts, request.body + b" ", sig)
    assert not verify_signature("another secret", ts, request.body, sig)
    assert not verify_signature(
        channel.secret, ts, request.body, sig, max_age_seconds=300, now=int(ts) + 3600
    )
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.response_status == 200
    assert delivery.attempts == 1 and delivery.sent_at is not None


def test_a_slack_channel_gets_slacks_text_payload(receiver, settings):  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = "https://ops.example.com"
    _hook(receiver.url, kind="slack")
    _budget_alert()

    sender.deliver_due()

    assert receiver.requests[0].json() == {
        "text": "*Support bot at 80 % of its monthly budget*\n"
        "Support bot used 80 % of 1,000,000 tokens; it resets on 1 June. "
        "<https://ops.example.com/savings/workflows/support/|Open in OpsDash>"
    }


def test_a_500_is_retried_after_the_backoff_and_then_sent(receiver):  # type: ignore[no-untyped-def]
    receiver.statuses = [500]
    _hook(receiver.url)
    _budget_alert()
    t0 = timezone.now()

    assert sender.deliver_due(now=t0) == 1
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.response_status == 500
    assert delivery.next_attempt_at == t0 + timedelta(seconds=10)
    assert "500" in delivery.last_error

    assert sender.deliver_due(now=t0 + timedelta(seconds=9)) == 0  # not due yet
    assert sender.deliver_due(now=t0 + timedelta(seconds=10)) == 1

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2
    assert len(receiver.requests) == 2
    # The same delivery id both times: a receiver can deduplicate on it.
    assert {r.headers["x-opsdash-delivery"] for r in receiver.requests} == {str(delivery.pk)}
    log = list(
        DeliveryAttempt.objects.filter(delivery=delivery).values_list("ok", "response_status")
    )
    assert log == [(False, 500), (True, 200)]


def test_a_delivery_fails_for_good_after_the_sixth_attempt(receiver):  # type: ignore[no-untyped-def]
    receiver.statuses = [503] * 10
    _hook(receiver.url)
    _budget_alert()
    now = timezone.now()
    waits = []
    for _ in range(sender.MAX_ATTEMPTS):
        assert sender.deliver_due(now=now) == 1
        delivery = Delivery.objects.get()
        if delivery.status == DeliveryStatus.PENDING:
            waits.append(delivery.next_attempt_at - now)
            now = delivery.next_attempt_at

    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 6
    assert [int(w.total_seconds()) for w in waits] == [10, 30, 120, 600, 1800]
    assert sender.deliver_due(now=now + timedelta(days=1)) == 0
    assert len(receiver.requests) == 6


def test_an_unreachable_receiver_is_an_attempt_with_a_sentence():
    Channel.objects.create(
        name="gone", kind="webhook", target="http://127.0.0.1:9/", events=["budget"]
    )
    _budget_alert()

    sender.deliver_due()

    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.response_status is None
    assert delivery.last_error.startswith("Cannot reach http://127.0.0.1:9/")


def test_an_email_channel_mails_its_addresses_and_its_roles_people(smtp, settings):  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = "https://ops.example.com"
    finance = User.objects.create_user("fin", email="fin@example.com")
    finance.groups.add(Group.objects.get_or_create(name="manager")[0])
    User.objects.create_user("op", email="op@example.com")  # no manager role: not mailed
    Channel.objects.create(
        name="finance",
        kind="email",
        target="cfo@example.com",
        roles=["manager"],
        events=["budget"],
    )
    _budget_alert()

    sender.deliver_due()

    [(sender_address, recipients)] = smtp.envelopes
    assert sorted(recipients) == ["cfo@example.com", "fin@example.com"]
    message = smtp.messages[0]
    assert message["Subject"] == "[OpsDash] Support bot at 80 % of its monthly budget"
    text = message.get_payload(decode=True).decode()
    assert "https://ops.example.com/savings/workflows/support/" in text
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_an_email_channel_without_smtp_fails_its_delivery_with_the_setting_to_set(settings):  # type: ignore[no-untyped-def]
    settings.SMTP_HOST = ""
    Channel.objects.create(name="ops", kind="email", target="ops@example.com", events=["budget"])
    _budget_alert()

    sender.deliver_due()

    delivery = Delivery.objects.get()
    # Retrying cannot help until the server is restarted with the settings.
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert "set OPSDASH_SMTP_HOST" in delivery.last_error


def test_a_delivery_stuck_in_sending_is_taken_again_after_a_few_minutes(receiver):  # type: ignore[no-untyped-def]
    _hook(receiver.url)
    _budget_alert()
    now = timezone.now()
    # A process claimed it and died before recording anything.
    Delivery.objects.update(status=DeliveryStatus.SENDING, claimed_at=now)

    assert sender.deliver_due(now=now + timedelta(minutes=1)) == 0
    assert sender.deliver_due(now=now + sender.STALE_AFTER + timedelta(seconds=1)) == 1
    assert Delivery.objects.get().status == DeliveryStatus.SENT


@pytest.mark.django_db(transaction=True)
def test_two_senders_racing_send_each_delivery_once(receiver):  # type: ignore[no-untyped-def]
    _hook(receiver.url)
    for n in range(10):
        _budget_alert(key=f"budget:3:2026-05-01:{n}")
    start = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            counts.append(sender.deliver_due())
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert sum(counts) == 10
    assert len(receiver.requests) == 10
    assert len({r.headers["x-opsdash-delivery"] for r in receiver.requests}) == 10
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SENT}


@pytest.mark.django_db(transaction=True)
def test_the_sender_thread_delivers_after_commit_and_stops_promptly(receiver):  # type: ignore[no-untyped-def]
    _hook(receiver.url)
    sender.start_sender()
    try:
        _budget_alert()  # autocommit: on_commit wakes the thread at once
        deadline = timezone.now() + timedelta(seconds=10)
        while not receiver.requests and timezone.now() < deadline:
            threading.Event().wait(0.05)
        assert len(receiver.requests) == 1
    finally:
        started = timezone.now()
        sender.stop_sender()
    assert not sender.running()
    assert timezone.now() - started < timedelta(seconds=2)


def test_the_send_notifications_command_delivers_what_is_due(receiver):  # type: ignore[no-untyped-def]
    from io import StringIO

    from django.core.management import call_command

    _hook(receiver.url)
    _budget_alert()
    out = StringIO()

    call_command("send_notifications", stdout=out)

    assert len(receiver.requests) == 1
    assert out.getvalue().startswith("1 delivery attempted; 0 waiting")


@pytest.mark.django_db(transaction=True)
def test_the_sender_thread_survives_a_database_error_and_delivers_next_round(  # type: ignore[no-untyped-def]
    receiver, settings, monkeypatch
):
    from django.db import OperationalError

    settings.NOTIFY_POLL_SECONDS = 1
    _hook(receiver.url)
    real_claim = sender._claim
    failures = []

    def claim_once_broken(now):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(now)
            raise OperationalError("database is locked")
        return real_claim(now)

    monkeypatch.setattr(sender, "_claim", claim_once_broken)
    _budget_alert()  # queued before the thread starts: its first round fails
    sender.start_sender()
    try:
        deadline = timezone.now() + timedelta(seconds=10)
        while not receiver.requests and timezone.now() < deadline:
            threading.Event().wait(0.05)
        assert failures, "the first round did not run"
        assert len(receiver.requests) == 1 and sender.running()
    finally:
        sender.stop_sender()
