"""Report days: every rollup bucket and date filter is a day in ``OPSDASH_REPORT_TIME_ZONE``."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone


def report_zone() -> ZoneInfo:
    try:
        return ZoneInfo(settings.REPORT_TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"OPSDASH_REPORT_TIME_ZONE must be a time zone name such as Europe/Paris, "
            f"not {settings.REPORT_TIME_ZONE!r}."
        ) from None


def report_day(moment: datetime) -> date:
    """The day a moment falls on in ``OPSDASH_REPORT_TIME_ZONE``: the rollup's bucket."""
    return moment.astimezone(report_zone()).date()


def day_start(day: date) -> datetime:
    """Midnight starting ``day`` in the report time zone, as an aware datetime."""
    return datetime.combine(day, time.min, tzinfo=report_zone())


def report_today() -> date:
    return report_day(timezone.now())
