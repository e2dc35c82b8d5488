"""Notifications: ``emit`` for every source of alerts (budgets, telemetry episodes, lost
nodes), and the channel verbs the alert settings page calls.

``emit`` writes in the caller's transaction and sends nothing itself: the sender
(``opsdash.notify.sender``) delivers after the commit, so a rolled-back budget crossing never
alerts, and a slow SMTP server never holds up a run's finalization or the telemetry sampler.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.models import User as DjangoUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.notify.models import (
    Channel,
    ChannelKind,
    Delivery,
    EventKind,
    Notification,
    new_secret,
)

__all__ = [
    "ChannelRefused",
    "EventKind",
    "create_channel",
    "delete_channel",
    "emit",
    "rotate_secret",
    "send_test",
    "set_channel_enabled",
    "update_channel",
]

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None


class ChannelRefused(Refusal):
    """A channel's settings that cannot work; the reason says which field and why."""

    default_code = Code.INVALID_PARAM


def emit(
    *,
    kind: str,
    key: str,
    subject: str,
    message: str,
    link: str = "",
    data: dict[str, Any] | None = None,
    channels: Sequence[Channel] | None = None,
) -> Notification | None:
    """Record the notification ``key`` once ever and queue one delivery per enabled channel
    that takes ``kind`` (or to ``channels`` alone: a test message). A second emit of the same
    key, from this process or another, returns None and queues nothing: the unique key is the
    episode, so "once per episode" holds however many processes see it."""
    try:
        # A savepoint: the duplicate's IntegrityError must not break the caller's transaction.
        with transaction.atomic():
            notification = Notification.objects.create(
                kind=kind,
                key=key[:255],
                subject=subject[:300],
                message=message,
                link=link[:500],
                data=data or {},
            )
    except IntegrityError:
        return None
    targets = (
        list(channels)
        if channels is not None
        else [c for c in Channel.objects.filter(enabled=True) if c.takes(kind)]
    )
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(notification=notification, channel=c, channel_name=c.name, next_attempt_at=now)
        for c in targets
    )
    if targets:
        transaction.on_commit(_wake_sender)
    return notification


def _wake_sender() -> None:
    from opsdash.notify import sender

    sender.wake()


# -- channels -----------------------------------------------------------------------------


def _clean(
    *, name: str, kind: str, target: str, roles: Sequence[str], events: Sequence[str]
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    from django.core.validators import validate_email
    from django.forms import ValidationError

    from opsdash.accounts.roles import Role

    name = name.strip()
    if not name:
        raise ChannelRefused("Give the channel a name.", param="name")
    if kind not in ChannelKind.values:
        raise ChannelRefused(
            f"The kind must be one of {', '.join(ChannelKind.values)}.", param="kind"
        )
    unknown_events = sorted(set(events) - set(EventKind.values))
    if unknown_events:
        raise ChannelRefused(f"Unknown events: {', '.join(unknown_events)}.", param="events")
    target = target.strip()
    clean_roles: list[str] = []
    if kind == ChannelKind.EMAIL:
        addresses = [a.strip() for a in target.replace(";", ",").split(",") if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ChannelRefused(
                    f"“{address[:80]}” is not an email address.", param="target"
                ) from None
        clean_roles = sorted(set(roles))
        bad = [r for r in clean_roles if r not in {role.value for role in Role}]
        if bad:
            raise ChannelRefused(f"Unknown roles: {', '.join(bad)}.", param="roles")
        if not addresses and not clean_roles:
            raise ChannelRefused(
                "Add at least one address, or a role whose people receive it.", param="target"
            )
        target = ", ".join(addresses)
    else:
        parts = urlsplit(target)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ChannelRefused(
                "The webhook URL must start with https:// (or http://) and name a host.",
                param="target",
            )
    return {
        "name": name[:100],
        "kind": kind,
        "target": target,
        "roles": clean_roles,
        "events": [e for e in EventKind.values if e in set(events)],
    }


def _target(channel: Channel) -> Target:
    return Target.of(channel, type="alert_channel", label=channel.name)


def create_channel(
    *,
    name: str,
    kind: str,
    target: str,
    events: Sequence[str],
    roles: Sequence[str] = (),
    enabled: bool = True,
    user: User,
) -> Channel:
    fields = _clean(name=name, kind=kind, target=target, roles=roles, events=events)
    with transaction.atomic():
        channel = Channel.objects.create(
            **fields, enabled=enabled, created_by=user if isinstance(user, DjangoUser) else None
        )
        record(actor=user, action="alert_channel.create", target=_target(channel), detail=fields)
    return channel


def update_channel(
    *,
    channel: Channel,
    name: str,
    kind: str,
    target: str,
    events: Sequence[str],
    roles: Sequence[str] = (),
    enabled: bool | None = None,
    user: User,
) -> Channel:
    fields = _clean(name=name, kind=kind, target=target, roles=roles, events=events)
    if enabled is not None:
        fields["enabled"] = enabled
    before = {k: getattr(channel, k) for k in fields}
    changed = {k: {"from": before[k], "to": v} for k, v in fields.items() if before[k] != v}
    with transaction.atomic():
        for k, v in fields.items():
            setattr(channel, k, v)
        channel.save()
        if changed:
            record(
                actor=user, action="alert_channel.update", target=_target(channel), detail=changed
            )
    return channel


def set_channel_enabled(*, channel: Channel, enabled: bool, user: User) -> Channel:
    if channel.enabled == enabled:
        return channel
    with transaction.atomic():
        channel.enabled = enabled
        channel.save(update_fields=["enabled", "updated_at"])
        record(
            actor=user,
            action="alert_channel.update",
            target=_target(channel),
            detail={"enabled": {"from": not enabled, "to": enabled}},
        )
    return channel


def rotate_secret(*, channel: Channel, user: User) -> Channel:
    """A new signing secret; receivers must be given it (the old one stops verifying)."""
    with transaction.atomic():
        channel.secret = new_secret()
        channel.save(update_fields=["secret", "updated_at"])
        record(
            actor=user,
            action="alert_channel.update",
            target=_target(channel),
            detail={"secret": "rotated"},
        )
    return channel


def delete_channel(*, channel: Channel, user: User) -> None:
    """Remove the channel; its past deliveries stay listed under its name."""
    with transaction.atomic():
        record(actor=user, action="alert_channel.delete", target=_target(channel))
        channel.delete()


def send_test(*, channel: Channel, user: User) -> Notification:
    """A test notification to ``channel`` alone, delivered like any other."""
    who = user.get_username() if user is not None and user.is_authenticated else "OpsDash"
    notification = emit(
        kind=EventKind.TEST,
        key=f"test:{channel.pk}:{uuid.uuid4().hex}",
        subject=f"Test message for {channel.name}",
        message=f"{who} sent this test from the alert settings. If you read it, the channel works.",
        link="/notifications/",
        data={"channel": channel.name},
        channels=[channel],
    )
    assert notification is not None  # a fresh uuid key cannot collide
    return notification
