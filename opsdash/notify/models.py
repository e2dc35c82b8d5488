"""Alert delivery: the channels admins configure, the notifications the system emits, and
each delivery of one notification to one channel with every attempt it took.

A ``Notification`` is written once per ``key`` (an episode: a budget crossing in one window, a
telemetry episode, a node going offline), enforced by a unique constraint so several hub
processes emitting the same episode write it once. The sender (``opsdash.notify.sender``)
moves each ``Delivery`` pending → sending → sent, or back to pending with a backoff, or failed.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


class EventKind(models.TextChoices):
    BUDGET = "budget", "Budgets"
    TELEMETRY = "telemetry", "Telemetry alerts"
    NODE = "node", "Node lost"
    TEST = "test", "Test messages"


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (JSON)"
    SLACK = "slack", "Slack-compatible webhook"


def new_secret() -> str:
    """A webhook signing secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


class Channel(models.Model):
    """Where notifications go. ``target`` is comma-separated addresses (email) or the URL
    (webhook, slack); ``roles`` adds the emails of every user holding one of those roles."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    target = models.TextField(blank=True)
    roles = models.JSONField(default=list, blank=True)
    events = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=64, default=new_secret)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_webhook(self) -> bool:
        return self.kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK)

    def takes(self, kind: str) -> bool:
        # A test notification goes only to the channel it was sent to (emit's ``channels``).
        return kind in self.events


class Notification(models.Model):
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    key = models.CharField(max_length=255, unique=True)
    subject = models.CharField(max_length=300)
    message = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.subject


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Delivery(models.Model):
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    # A deleted channel keeps its deliveries' history (named in ``channel_name``).
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=100, blank=True)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The sender's query: due pending rows, and stale sending ones.
            models.Index(fields=["status", "next_attempt_at"], name="notify_delivery_due"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of notification {self.notification_id}"


class DeliveryAttempt(models.Model):
    """One try of a delivery, as the page lists it."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    ok = models.BooleanField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
