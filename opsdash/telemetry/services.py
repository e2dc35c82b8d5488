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
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.telemetry import frames, storage
from opsdash.telemetry.frames import Frame
from opsdash.telemetry.history import RANGES, HistoryAnswer, from_rows, from_samples
from opsdash.telemetry.models import AlertEpisode, AlertKind, AlertRule
from opsdash.telemetry.sampler import current_sampler, get_sampler

# Storage verbs pages, the API and commands call through this module too.
from opsdash.telemetry.storage import alert_rules as alert_rules
from opsdash.telemetry.storage import close_open_episodes as close_open_episodes
from opsdash.telemetry.storage import prune_history as prune_history
from opsdash.telemetry.storage import record_alert_changes as record_alert_changes
from opsdash.telemetry.storage import save_minute as save_minute

AGENTS_GROUP = "telemetry.agents"
AGENT_ANSWER_SECONDS = 2.0


class TelemetryUnavailable(Refusal):
    """No frame could be had (no agent answered, or the sampler has not produced one yet)."""

    default_code = Code.UNAVAILABLE


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
    rows = storage.minute_rows(
        host=host_name, since=now - timedelta(seconds=range_.seconds + range_.step)
    )
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
    last = storage.last_host()
    return last or str(settings.TELEMETRY_HOST)


# --- alerts ---------------------------------------------------------------------------------


def update_thresholds(*, values: dict[str, tuple[float, bool]], user: Any) -> None:
    """Set thresholds (kind → (threshold, enabled)); the running sampler picks them up now."""
    with transaction.atomic():
        for kind, (threshold, enabled) in values.items():
            AlertKind(kind)  # refuses an unknown kind
            AlertRule.objects.update_or_create(
                kind=kind,
                defaults={"threshold": threshold, "enabled": enabled, "updated_by": user},
            )
        record(
            actor=user,
            action="threshold.update",
            target=Target(type="threshold", label=", ".join(sorted(values))),
            detail={
                kind: {"threshold": threshold, "enabled": enabled}
                for kind, (threshold, enabled) in values.items()
            },
        )
    sampler = current_sampler()
    if sampler is not None:
        sampler.reload_rules()


def recent_episodes(*, limit: int = 20) -> list[AlertEpisode]:
    return list(AlertEpisode.objects.all()[:limit])
