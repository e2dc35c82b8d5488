"""The sender: delivers queued notifications, in a thread of every web process.

``deliver_due`` is one round: claim each due delivery with a conditional UPDATE (pending and
due → sending; a row left ``sending`` for ``STALE_AFTER`` by a process that died is taken
again), send it, and record the attempt: sent; or pending again after ``BACKOFF[attempt]``;
or failed after ``MAX_ATTEMPTS`` (at once when no retry can help: SMTP not configured). The
claim matches only while the row is still as it was read, so however many hub processes run a
round at once, each delivery is sent by one of them.

The thread runs a round when ``emit``'s transaction commits (``wake``) and every
``NOTIFY_POLL_SECONDS`` (retries, other processes' notifications). Its error policy: a failing
round (database restarting, locked) is logged and the next round retries; a failing send is a
failed attempt of that one delivery, never the end of the thread. ``manage.py
send_notifications`` runs one round for installations that prefer cron.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from opsdash.notify import webhooks
from opsdash.notify.mail import MailFailed, absolute_url, send_email, smtp_configured
from opsdash.notify.models import (
    Channel,
    ChannelKind,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)

logger = logging.getLogger(__name__)

#: Wait before attempt n+2 after attempt n+1 failed: 10 s, 30 s, 2 min, 10 min, 30 min.
BACKOFF = (
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
#: A delivery claimed this long ago and still ``sending`` was abandoned (its process died).
STALE_AFTER = timedelta(minutes=5)
#: At most this many deliveries per round, so a backlog cannot starve the stop signal.
BATCH = 50


def _claim(now: datetime) -> list[Delivery]:
    due = (
        Delivery.objects.filter(
            Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            | Q(status=DeliveryStatus.SENDING, claimed_at__lt=now - STALE_AFTER)
        )
        .order_by("next_attempt_at", "id")
        .values_list("pk", "status", "claimed_at")[:BATCH]
    )
    claimed: list[int] = []
    for pk, status, claimed_at in list(due):
        taken = Delivery.objects.filter(pk=pk, status=status, claimed_at=claimed_at).update(
            status=DeliveryStatus.SENDING, claimed_at=now
        )
        if taken:
            claimed.append(pk)
    return list(
        Delivery.objects.filter(pk__in=claimed)
        .select_related("notification", "channel")
        .order_by("id")
    )


def email_recipients(channel: Channel) -> list[str]:
    """The channel's addresses, and those of the active users holding one of its roles."""
    addresses = [a.strip() for a in channel.target.split(",") if a.strip()]
    if channel.roles:
        users = (
            get_user_model()
            .objects.filter(is_active=True, groups__name__in=channel.roles)
            .exclude(email="")
        )
        addresses += [u.email for u in users.distinct()]
    return list(dict.fromkeys(addresses))


def _send(delivery: Delivery) -> webhooks.Outcome:
    channel, notification = delivery.channel, delivery.notification
    if channel is None:
        return webhooks.Outcome(False, None, "The channel was deleted before this was sent.")
    if channel.kind == ChannelKind.EMAIL:
        link = absolute_url(notification.link)
        text = notification.message + (f"\n\nOpen in OpsDash: {link}\n" if link else "\n")
        try:
            send_email(
                to=email_recipients(channel),
                subject=f"[OpsDash] {notification.subject}",
                text=text,
            )
        except MailFailed as exc:
            # Unconfigured SMTP needs a restart with the settings: retrying cannot help.
            return webhooks.Outcome(False, None, exc.reason, final=not smtp_configured())
        return webhooks.Outcome(True, None, "")
    return webhooks.post(
        url=channel.target,
        secret=channel.secret,
        event=notification.kind,
        delivery_id=delivery.pk,
        body=webhooks.payload(notification, kind=channel.kind),
    )


def _record(delivery: Delivery, outcome: webhooks.Outcome, *, now: datetime, ms: int) -> None:
    attempt = delivery.attempts + 1
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=attempt,
        at=now,
        ok=outcome.ok,
        response_status=outcome.status,
        error=outcome.error[:2000],
        duration_ms=ms,
    )
    fields: dict[str, object] = {
        "attempts": attempt,
        "response_status": outcome.status,
        "last_error": outcome.error[:2000],
    }
    if outcome.ok:
        fields.update(status=DeliveryStatus.SENT, sent_at=now)
    elif attempt >= MAX_ATTEMPTS or outcome.final:
        fields.update(status=DeliveryStatus.FAILED)
    else:
        fields.update(status=DeliveryStatus.PENDING, next_attempt_at=now + BACKOFF[attempt - 1])
    # Only while the claim is still ours (a stale reclaim by another process wins).
    Delivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.SENDING, claimed_at=delivery.claimed_at
    ).update(**fields)


def deliver_due(now: datetime | None = None) -> int:
    """One round: send every due delivery once; returns how many were attempted.

    ``now`` is when the round happens (tests drive the backoff with it)."""
    now = now or timezone.now()
    claimed = _claim(now)
    for delivery in claimed:
        started = time.monotonic()
        try:
            outcome = _send(delivery)
        except Exception as exc:  # a bug in one transport must not stop the others
            logger.exception("delivering notification %s failed", delivery.notification_id)
            outcome = webhooks.Outcome(False, None, f"Internal error while sending: {exc}")
        _record(delivery, outcome, now=now, ms=int((time.monotonic() - started) * 1000))
        if not outcome.ok:
            logger.warning(
                "delivery %s to %s failed (attempt %s): %s",
                delivery.pk,
                delivery.channel_name,
                delivery.attempts + 1,
                outcome.error,
            )
    return len(claimed)


# -- the thread ---------------------------------------------------------------------------

_lock = threading.Lock()
_stop = threading.Event()
_wake = threading.Event()
_thread: threading.Thread | None = None


def _run(stop: threading.Event, wake: threading.Event) -> None:
    while not stop.is_set():
        wake.wait(settings.NOTIFY_POLL_SECONDS)
        wake.clear()
        if stop.is_set():
            break
        try:
            close_old_connections()
            # A full batch means more are due: go again at once.
            while deliver_due() >= BATCH and not stop.is_set():
                pass
        except Exception:
            logger.warning("the notification sender's round failed; retrying", exc_info=True)
    connection.close()


def start_sender() -> None:
    """Start this process's sender thread (idempotent)."""
    global _thread, _stop, _wake
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop, _wake = threading.Event(), threading.Event()
        _wake.set()  # a first round at once: what was queued while no sender ran
        _thread = threading.Thread(
            target=_run, args=(_stop, _wake), name="opsdash-notify-sender", daemon=True
        )
        _thread.start()


def stop_sender() -> None:
    """Stop promptly: the thread ends after the send in progress (webhooks time out in 5 s)."""
    global _thread
    with _lock:
        current, _thread = _thread, None
        _stop.set()
        _wake.set()
    if current is not None:
        current.join(timeout=webhooks.TIMEOUT_SECONDS + settings.SMTP_TIMEOUT_SECONDS + 2)


def wake() -> None:
    """Run a round now (``emit`` calls this after its transaction commits)."""
    if _thread is not None and _thread.is_alive():
        _wake.set()


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def reset_after_fork() -> None:
    """In a forked child: the parent's thread did not come along; start afresh on first use."""
    global _thread, _lock, _stop, _wake
    _thread, _lock, _stop, _wake = None, threading.Lock(), threading.Event(), threading.Event()
