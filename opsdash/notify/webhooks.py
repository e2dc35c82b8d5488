"""Webhook payloads, their signature, and the POST.

Every webhook request carries:

- ``X-OpsDash-Event``: the notification's kind (``budget``, ``telemetry``, ``node``, ``test``);
- ``X-OpsDash-Delivery``: the delivery's id (the same on every retry: deduplicate on it);
- ``X-OpsDash-Timestamp``: Unix seconds when this attempt was signed;
- ``X-OpsDash-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body``
  keyed with the channel's secret (shown on the alert settings page).

A receiver verifies it so (``verify_signature`` does exactly this)::

    expected = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, "sha256").hexdigest()
    ok = hmac.compare_digest(expected, header) and abs(time.time() - int(ts)) < 300

over the raw body bytes as received, before any JSON parsing. Binding the timestamp into the
signature means a captured request cannot be replayed later with a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from opsdash.notify.mail import absolute_url
from opsdash.notify.models import ChannelKind, Notification

TIMEOUT_SECONDS = 5.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    max_age_seconds: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (``X-OpsDash-Signature``) signs ``body`` at ``timestamp`` with
    ``secret``; with ``max_age_seconds``, also that the timestamp is that recent."""
    if not hmac.compare_digest(sign(secret, timestamp, body), header or ""):
        return False
    if max_age_seconds is not None:
        try:
            age = abs((time.time() if now is None else now) - int(timestamp))
        except ValueError:
            return False
        return age <= max_age_seconds
    return True


def payload(notification: Notification, *, kind: str) -> dict[str, Any]:
    """The JSON body for a channel of ``kind``: OpsDash's own shape, or Slack's."""
    link = absolute_url(notification.link)
    if kind == ChannelKind.SLACK:
        text = f"*{notification.subject}*\n{notification.message}"
        if link:
            text += f" <{link}|Open in OpsDash>"
        return {"text": text}
    return {
        "id": notification.pk,
        "event": notification.kind,
        "key": notification.key,
        "subject": notification.subject,
        "message": notification.message,
        "link": link,
        "data": notification.data,
        "created_at": notification.created_at.isoformat(),
    }


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None
    error: str
    #: No retry can help (SMTP not configured): the delivery fails at once.
    final: bool = False


def post(*, url: str, secret: str, event: str, delivery_id: int, body: dict[str, Any]) -> Outcome:
    """POST ``body`` signed; 2xx is delivered, anything else (or no answer) is to retry."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=raw,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "OpsDash-Webhook/1",
            "X-OpsDash-Event": event,
            "X-OpsDash-Delivery": str(delivery_id),
            "X-OpsDash-Timestamp": timestamp,
            "X-OpsDash-Signature": sign(secret, timestamp, raw),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return Outcome(False, exc.code, f"The receiver answered {exc.code} {exc.reason}.")
    except urllib.error.URLError as exc:
        return Outcome(False, None, f"Cannot reach {url}: {exc.reason}.")
    except (TimeoutError, OSError) as exc:
        return Outcome(False, None, f"{url} did not answer within {TIMEOUT_SECONDS:g} s: {exc}.")
    if 200 <= status < 300:
        return Outcome(True, status, "")
    return Outcome(False, status, f"The receiver answered {status}; only 2xx counts as received.")
