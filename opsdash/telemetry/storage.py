"""Telemetry's storage: per-minute rows, alert episodes and thresholds in the database.

The sampler is given this module (``Sampler(storage=...)``) and calls it from its database
thread; ``services`` reads through it for pages and the API. It imports neither of them, so
there is no import circle.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from opsdash.notify import hooks as notify
from opsdash.telemetry import alerts
from opsdash.telemetry.history import MinuteRow
from opsdash.telemetry.models import AlertEpisode, AlertRule, MinuteFigures


def minute_rows(*, host: str, since: datetime) -> Iterable[tuple[datetime, int, Any]]:
    """``(minute, samples, figures)`` of ``host`` from ``since`` on."""
    return MinuteFigures.objects.filter(host=host, minute__gte=since).values_list(
        "minute", "samples", "figures"
    )


def last_host() -> str | None:
    """The host of the newest minute row, if any."""
    return MinuteFigures.objects.order_by("-minute").values_list("host", flat=True).first()


def save_minute(*, host: str, row: MinuteRow) -> None:
    """Store one minute's rollup; a second row for the same minute (a restart within it) is
    merged, weighted by its samples."""
    with transaction.atomic():
        existing = MinuteFigures.objects.select_for_update().filter(host=host, minute=row.minute)
        current = existing.first()
        if current is None:
            MinuteFigures.objects.create(
                host=host, minute=row.minute, samples=row.samples, figures=row.figures
            )
            return
        merged: dict[str, list[float]] = dict(current.figures)
        n0, n1 = current.samples, row.samples
        for name, (low, avg, high) in row.figures.items():
            if name not in merged:
                merged[name] = [low, avg, high]
                continue
            lo0, avg0, hi0 = merged[name]
            weighted = round((avg0 * n0 + avg * n1) / (n0 + n1), 2)
            merged[name] = [min(lo0, low), weighted, max(hi0, high)]
        current.samples, current.figures = min(n0 + n1, 32767), merged
        current.save(update_fields=["samples", "figures"])


def prune_history(*, days: int | None = None, now: datetime | None = None) -> tuple[int, int]:
    """Delete minute rows and ended alert episodes older than the retention; returns how many
    of each went."""
    keep = days if days is not None else settings.TELEMETRY_HISTORY_DAYS
    cutoff = (now or timezone.now()) - timedelta(days=keep)
    old_minutes = MinuteFigures.objects.filter(minute__lt=cutoff)
    old_episodes = AlertEpisode.objects.filter(ended_at__lt=cutoff)
    # Reading first means the hourly run takes no write lock when there is nothing to delete.
    minutes = old_minutes.delete()[0] if old_minutes.exists() else 0
    episodes = old_episodes.delete()[0] if old_episodes.exists() else 0
    return minutes, episodes


def alert_rules() -> list[alerts.Rule]:
    """The thresholds in force: the stored ones, the defaults for any kind not stored."""
    stored = {r.kind: r for r in AlertRule.objects.all()}
    return [
        alerts.Rule(kind, stored[kind].threshold, stored[kind].enabled)
        if kind in stored
        else alerts.Rule(kind, default)
        for kind, default in alerts.DEFAULT_THRESHOLDS.items()
    ]


def record_alert_changes(*, host: str, changes: alerts.Changes) -> None:
    for episode in changes.opened:
        # One notification per episode (its pk is the key), written with it; sent after commit.
        with transaction.atomic():
            stored = AlertEpisode.objects.create(
                kind=episode.kind,
                host=host,
                subject=episode.subject,
                threshold=episode.threshold,
                peak=episode.peak,
                message=episode.message,
                started_at=_from_ms(episode.since_ms),
            )
            notify.emit_telemetry_episode(episode=stored)
    for episode in changes.closed:
        AlertEpisode.objects.filter(
            kind=episode.kind, host=host, subject=episode.subject, ended_at__isnull=True
        ).update(
            ended_at=_from_ms(episode.ended_ms or episode.since_ms),
            peak=episode.peak,
            message=episode.peak_message,
        )


def close_open_episodes(*, host: str, at: datetime) -> int:
    """At start-up: episodes a previous process left open end now (they reopen if still true)."""
    still_open = AlertEpisode.objects.filter(host=host, ended_at__isnull=True)
    return still_open.update(ended_at=at) if still_open.exists() else 0


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
