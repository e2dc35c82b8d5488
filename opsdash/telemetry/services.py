"""Telemetry verbs: the one place pages, API, consumers, /metrics and commands get figures from.

Embedded mode (the default) reads the sampler of this process. With
``OPSDASH_TELEMETRY_EMBEDDED=false`` the web processes run no sampler: ``manage.py
telemetry_agent`` does, one per node, and answers requests sent over the channel layer
(``AGENTS_GROUP``) with its latest frame or its 15-minute history, so the same functions work.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from opsdash.telemetry import alerts, frames
from opsdash.telemetry.frames import Frame
from opsdash.telemetry.history import (
    RANGES,
    HistoryAnswer,
    MinuteRow,
    from_rows,
    from_samples,
)
from opsdash.telemetry.models import AlertEpisode, AlertKind, AlertRule, MinuteFigures
from opsdash.telemetry.sampler import current_sampler, get_sampler

AGENTS_GROUP = "telemetry.agents"
AGENT_ANSWER_SECONDS = 2.0


class TelemetryUnavailable(Exception):
    """No frame could be had (no agent answered, or the sampler has not produced one yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- frames ---------------------------------------------------------------------------------


def snapshot() -> Frame:
    """The latest frame (of the first agent to answer, in agent mode)."""
    if settings.TELEMETRY_EMBEDDED:
        latest = get_sampler().latest(wait=max(3.0, 3 * settings.TELEMETRY_TICK_MS / 1000))
        if latest is None:
            raise TelemetryUnavailable("The sampler has not produced a frame yet; try again.")
        return latest
    answers = async_to_sync(ask_agents)("latest", first_only=True)
    if not answers:
        raise TelemetryUnavailable(
            "No telemetry agent answered: run `manage.py telemetry_agent` on each node."
        )
    frame: Frame = json.loads(answers[0])
    return frame


def snapshots() -> list[Frame]:
    """The latest frame of every host (one in embedded mode)."""
    if settings.TELEMETRY_EMBEDDED:
        return [snapshot()]
    return [json.loads(text) for text in async_to_sync(ask_agents)("latest")]


async def ask_agents(what: str, *, first_only: bool = False) -> list[str]:
    """Ask every telemetry agent for ``latest`` or ``history``; their JSON texts."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return []
    reply_to = await layer.new_channel("telemetry.reply.")
    await layer.group_send(
        AGENTS_GROUP, {"type": "telemetry.request", "what": what, "reply_to": reply_to}
    )
    answers: list[str] = []
    deadline = time.monotonic() + AGENT_ANSWER_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(layer.receive(reply_to), remaining)
        except TimeoutError:
            break
        answers.append(message["text"])
        if first_only:
            break
    return answers


# --- history --------------------------------------------------------------------------------


def history(*, range_name: str, host: str | None = None) -> HistoryAnswer:
    """Columnar min/avg/max series for the range picker: 5m and 15m at 1 s from memory, 1h,
    24h and 7d from the per-minute rows. Raises KeyError for an unknown range."""
    range_ = RANGES[range_name]
    if range_.live:
        texts, host_name = _live_history(host)
        samples = []
        for text in texts:
            frame = json.loads(text)
            samples.append((frame["t"], frames.series_of(frame)))
        return from_samples(samples, range_=range_, host=host_name, now_ms=int(time.time() * 1000))
    host_name = host or _default_host()
    now = timezone.now()
    rows = MinuteFigures.objects.filter(
        host=host_name, minute__gte=now - timedelta(seconds=range_.seconds + range_.step)
    ).values_list("minute", "samples", "figures")
    return from_rows(rows, range_=range_, host=host_name, now=now)


def _live_history(host: str | None) -> tuple[list[str], str]:
    if settings.TELEMETRY_EMBEDDED:
        sampler = get_sampler()
        sampler.latest(wait=3.0)  # just started: at least its first frame
        return sampler.history_frames(), sampler.host
    for text in async_to_sync(ask_agents)("history"):
        answer = json.loads(text)
        if host is None or answer.get("host") == host:
            return [frames.encode(f) for f in answer["frames"]], answer.get("host", "")
    raise TelemetryUnavailable("No telemetry agent answered with its history.")


def _default_host() -> str:
    if settings.TELEMETRY_EMBEDDED:
        return str(settings.TELEMETRY_HOST)
    last = MinuteFigures.objects.order_by("-minute").values_list("host", flat=True).first()
    return last or str(settings.TELEMETRY_HOST)


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


# --- alerts ---------------------------------------------------------------------------------


def alert_rules() -> list[alerts.Rule]:
    """The thresholds in force: the stored ones, the defaults for any kind not stored."""
    stored = {r.kind: r for r in AlertRule.objects.all()}
    return [
        alerts.Rule(kind, stored[kind].threshold, stored[kind].enabled)
        if kind in stored
        else alerts.Rule(kind, default)
        for kind, default in alerts.DEFAULT_THRESHOLDS.items()
    ]


def update_thresholds(*, values: dict[str, tuple[float, bool]], user: Any) -> None:
    """Set thresholds (kind → (threshold, enabled)); the running sampler picks them up now."""
    with transaction.atomic():
        for kind, (threshold, enabled) in values.items():
            AlertKind(kind)  # refuses an unknown kind
            AlertRule.objects.update_or_create(
                kind=kind,
                defaults={"threshold": threshold, "enabled": enabled, "updated_by": user},
            )
    sampler = current_sampler()
    if sampler is not None:
        sampler.reload_rules()


def record_alert_changes(*, host: str, changes: alerts.Changes) -> None:
    for episode in changes.opened:
        AlertEpisode.objects.create(
            kind=episode.kind,
            host=host,
            subject=episode.subject,
            threshold=episode.threshold,
            peak=episode.peak,
            message=episode.message,
            started_at=_from_ms(episode.since_ms),
        )
    for episode in changes.closed:
        AlertEpisode.objects.filter(
            kind=episode.kind, host=host, subject=episode.subject, ended_at__isnull=True
        ).update(
            ended_at=_from_ms(episode.ended_ms or episode.since_ms),
            peak=episode.peak,
            message=alerts.describe(episode.kind, episode.subject, episode.peak, episode.threshold),
        )


def close_open_episodes(*, host: str, at: datetime) -> int:
    """At start-up: episodes a previous process left open end now (they reopen if still true)."""
    still_open = AlertEpisode.objects.filter(host=host, ended_at__isnull=True)
    return still_open.update(ended_at=at) if still_open.exists() else 0


def recent_episodes(*, limit: int = 20) -> list[AlertEpisode]:
    return list(AlertEpisode.objects.all()[:limit])


# --- what other apps know -------------------------------------------------------------------


def model_names(ids: list[int]) -> dict[int, str]:
    """Model id → name, for the runner table."""
    from opsdash.catalog.models import LocalModel

    return dict(LocalModel.objects.filter(pk__in=ids).values_list("pk", "name"))


def model_slugs(ids: list[int]) -> dict[int, str]:
    """Model id → slug: the ``model`` label of /metrics, the same as the run counters'."""
    from opsdash.catalog.models import LocalModel

    return dict(LocalModel.objects.filter(pk__in=ids).values_list("pk", "slug"))


def run_totals() -> list[dict[str, Any]]:
    """Runs and tokens by model and status, from the run ledger (for /metrics)."""
    from opsdash.runs.models import Run

    rows = (
        Run.objects.values("model__slug", "status")
        .annotate(
            runs=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("model__slug", "status")
    )
    return [dict(row) for row in rows]


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
