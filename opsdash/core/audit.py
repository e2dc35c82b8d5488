"""The one audit log: every admin and manager action, and what the system did on its own.

``record`` is the only way in; entries are never changed or removed (``AuditEntry`` refuses).
``entries`` is the one query the Audit page and ``GET /api/audit`` both read, so they cannot
disagree about what a filter means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import models

from opsdash.core.models import AuditEntry, Outcome

__all__ = [
    "AuditEntry",
    "AuditFilters",
    "FilterError",
    "Outcome",
    "Target",
    "entries",
    "parse_filters",
    "record",
]


@dataclass(frozen=True)
class Target:
    """What an action was done to: a short type name (``model``, ``key``…), its id and a label."""

    type: str
    id: str = ""
    label: str = ""

    @classmethod
    def of(cls, obj: models.Model, *, type: str, label: str | None = None) -> Target:
        return cls(type=type, id=str(obj.pk), label=str(obj) if label is None else label)


def record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    target: Target | None = None,
    outcome: Outcome | str = Outcome.OK,
    detail: str | Mapping[str, Any] = "",
) -> AuditEntry:
    """Append one entry. ``actor`` None (or anonymous) means the system or a command."""
    outcome = Outcome(outcome)
    user = actor if isinstance(actor, User) else None
    target = target or Target(type="")
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        action=action,
        target_type=target.type,
        target_id=target.id[:64],
        target_label=target.label[:300],
        outcome=outcome,
        detail=dict(detail) if isinstance(detail, Mapping) else detail,
    )


def entries(
    *,
    actor: str = "",
    action: str | Sequence[str] = "",
    target_type: str = "",
    target_id: str = "",
    outcome: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> models.QuerySet[AuditEntry]:
    """Entries newest first. ``actor`` is a username (``system`` for none), ``action`` a dotted
    prefix or several (``model`` matches ``model.install`` and ``model.retire``), ``until``
    exclusive."""
    found = AuditEntry.objects.all()
    if actor == "system":
        found = found.filter(actor_name="")
    elif actor:
        found = found.filter(actor_name=actor)
    prefixes = [action] if isinstance(action, str) else list(action)
    if any(prefixes):
        match = models.Q()
        for prefix in filter(None, prefixes):
            prefix = prefix.rstrip(".")
            match |= models.Q(action=prefix) | models.Q(action__startswith=f"{prefix}.")
        found = found.filter(match)
    if target_type:
        found = found.filter(target_type=target_type)
    if target_id:
        found = found.filter(target_id=target_id)
    if outcome:
        found = found.filter(outcome=outcome)
    if since is not None:
        found = found.filter(at__gte=since)
    if until is not None:
        found = found.filter(at__lt=until)
    return found


class FilterError(ValueError):
    """A filter the Audit page or ``GET /api/audit`` cannot use; the message says why."""


@dataclass(frozen=True)
class AuditFilters:
    """The filters of a request; ``start``/``end`` are report days, inclusive."""

    actor: str = ""
    action: str = ""
    target_type: str = ""
    outcome: str = ""
    start: date | None = None
    end: date | None = None
    query: dict[str, str] = field(default_factory=dict)

    def entries(self) -> models.QuerySet[AuditEntry]:
        zone = ZoneInfo(settings.REPORT_TIME_ZONE)
        since = datetime.combine(self.start, time(), zone) if self.start else None
        until = datetime.combine(self.end + timedelta(days=1), time(), zone) if self.end else None
        return entries(
            actor=self.actor,
            action=self.action,
            target_type=self.target_type,
            outcome=self.outcome,
            since=since,
            until=until,
        )


def _day(raw: str, name: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FilterError(f"“{name}” must be a day as YYYY-MM-DD, not {raw[:40]!r}.") from None


def parse_filters(params: Mapping[str, str]) -> AuditFilters:
    """``actor``, ``action`` (a dotted prefix), ``target_type``, ``outcome``, ``from`` and ``to``
    (days in the report time zone, inclusive), as the page's form and the API both send them."""
    values = {
        key: (params.get(key) or "").strip()[:150]
        for key in ("actor", "action", "target_type", "outcome", "from", "to")
    }
    outcome = values["outcome"]
    if outcome and outcome not in Outcome.values:
        raise FilterError(f"“outcome” must be one of {', '.join(Outcome.values)}.")
    start, end = _day(values["from"], "from"), _day(values["to"], "to")
    if start and end and end < start:
        raise FilterError(f"The date range is reversed: “from” ({start}) is after “to” ({end}).")
    return AuditFilters(
        actor=values["actor"],
        action=values["action"],
        target_type=values["target_type"],
        outcome=outcome,
        start=start,
        end=end,
        query={key: value for key, value in values.items() if value},
    )
