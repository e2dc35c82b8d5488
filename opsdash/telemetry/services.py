"""Telemetry verbs: the one place pages, API, consumers, /metrics and commands get figures from.

Embedded mode (the default, ``OPSDASH_TELEMETRY_EMBEDDED``) reads the sampler of this process:
the local host is the one node. Fleet mode (a hub: no sampler in the web processes) reads this
process's fleet store (``opsdash.telemetry.store``), which every node's frames reach through the
``telemetry`` group whichever hub process holds the node's socket; each node's agent runs its
node's one sampler (``manage.py agent``).

Which node: ``snapshot(host=NAME)`` and ``history(host=NAME)`` answer for that node, refused
with a 404 sentence naming the live nodes when it is not one of them. Without a host the
embedded mode answers for the local host, and a hub for its one live node; with several live
nodes a hub refuses (400) rather than pick one a script did not ask for.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.telemetry import fleet, frames, relay, storage
from opsdash.telemetry.frames import Frame
from opsdash.telemetry.history import RANGES, HistoryAnswer, from_rows, from_samples
from opsdash.telemetry.models import AlertEpisode, AlertKind, AlertRule
from opsdash.telemetry.node_status import recorded_statuses
from opsdash.telemetry.sampler import Sampler, current_sampler, get_sampler

# Storage verbs pages, the API and commands call through this module too.
from opsdash.telemetry.storage import alert_rules as alert_rules
from opsdash.telemetry.storage import close_open_episodes as close_open_episodes
from opsdash.telemetry.storage import prune_history as prune_history
from opsdash.telemetry.storage import record_alert_changes as record_alert_changes
from opsdash.telemetry.storage import save_minute as save_minute
from opsdash.telemetry.store import FleetStore, describe_live, get_store


class TelemetryUnavailable(Refusal):
    """No frame could be had (no node sends telemetry, or the sampler has not produced one)."""

    default_code = Code.UNAVAILABLE


class UnknownHost(Refusal):
    """The host asked for sends no telemetry here."""

    default_code = Code.NOT_FOUND


class HostRequired(Refusal):
    """Several nodes are live and the caller did not say which one."""

    default_code = Code.INVALID


class NodeCard(TypedDict):
    """One node of the telemetry page's grid (the figures come with its frames)."""

    host: str
    # The node's recorded status when a source answers for it (``recorded``: pending, healthy,
    # unhealthy, offline, draining); else healthy (a frame within NODE_UNHEALTHY_SECONDS) or
    # unhealthy.
    status: str
    recorded: bool
    live: bool  # its frames reach this hub (a node with no frame has a card with no figures)
    age_seconds: float | None
    frame: Frame | None


# --- frames ---------------------------------------------------------------------------------


def _local_sampler(host: str | None) -> Sampler:
    """This process's sampler (embedded mode), refusing any ``host`` but its own."""
    sampler = get_sampler()
    if host is not None and host != sampler.host:
        raise UnknownHost(
            f"This OpsDash samples only its own host, {sampler.host!r}; there is no node {host!r}.",
            param="host",
        )
    return sampler


def snapshot(host: str | None = None) -> Frame:
    """The latest frame of ``host`` (see the module's docstring for which node without one)."""
    if settings.TELEMETRY_EMBEDDED:
        sampler = _local_sampler(host)
        latest = sampler.latest(wait=max(3.0, 3 * settings.TELEMETRY_TICK_MS / 1000))
        if latest is None:
            raise TelemetryUnavailable("The sampler has not produced a frame yet; try again.")
        return latest
    store = _fleet_store(host)
    name = _fleet_host(store, host)
    frame = store.latest(name)
    if frame is None:  # went offline between the two reads
        raise UnknownHost(_not_live(store, name), param="host")
    return frame


def snapshots() -> list[Frame]:
    """The latest frame of every live node, by name (the one local host in embedded mode)."""
    if settings.TELEMETRY_EMBEDDED:
        return [snapshot()]
    store = _fleet_store(None)
    found = [store.latest(host) for host in store.live_hosts()]
    return [f for f in found if f is not None]


def node_cards() -> list[NodeCard]:
    """The telemetry page's grid: every live node, then (on a hub) the nodes the fleet knows
    that send no frame, each with its recorded status (``node_status``); the local host alone
    in embedded mode."""
    unhealthy = float(settings.NODE_UNHEALTHY_SECONDS)
    if settings.TELEMETRY_EMBEDDED:
        sampler = current_sampler()
        frame = sampler.latest() if sampler is not None else None
        host = sampler.host if sampler is not None else str(settings.TELEMETRY_HOST)
        return [
            {
                "host": host,
                "status": "healthy",
                "recorded": False,
                "live": True,
                "age_seconds": 0.0,
                "frame": frame,
            }
        ]
    store = _fleet_store(None)
    recorded = recorded_statuses()
    cards: list[NodeCard] = []
    for host in store.live_hosts():
        age = store.age_seconds(host)
        status = "healthy" if age is not None and age <= unhealthy else "unhealthy"
        cards.append(
            {
                "host": host,
                "status": recorded.get(host, status),
                "recorded": host in recorded,
                "live": True,
                "age_seconds": age,
                "frame": None,
            }
        )
    live = {card["host"] for card in cards}
    for host in sorted(set(recorded) - live):
        cards.append(
            {
                "host": host,
                "status": recorded[host],
                "recorded": True,
                "live": False,
                "age_seconds": None,
                "frame": None,
            }
        )
    return cards


def _fleet_store(host: str | None) -> FleetStore:
    """The store, its listener started; a listener started just now waits for a first frame."""
    store = get_store()
    if relay.start_listener():
        store.wait_for_any(max(2.0, 2.5 * settings.TELEMETRY_TICK_MS / 1000), host)
    return store


def _fleet_host(store: FleetStore, host: str | None) -> str:
    live = store.live_hosts()
    if host is not None:
        if host not in live:
            raise UnknownHost(_not_live(store, host), param="host")
        return host
    if len(live) == 1:
        return live[0]
    if not live:
        raise TelemetryUnavailable(
            "No node is sending telemetry to this hub: start `manage.py agent` on each node "
            "and approve it on the Nodes page."
        )
    raise HostRequired(
        f"This hub has {len(live)} nodes sending telemetry; name one with ?host=NAME "
        f"({describe_live(live)}).",
        param="host",
    )


def _not_live(store: FleetStore, host: str) -> str:
    return (
        f"No node named {host!r} has sent telemetry in the last "
        f"{settings.NODE_OFFLINE_SECONDS} s ({describe_live(store.live_hosts())})."
    )


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
        sampler = _local_sampler(host)
        sampler.latest(wait=3.0)  # just started: at least its first frame
        return sampler.history_frames(), sampler.host
    store = _fleet_store(host)
    name = _fleet_host(store, host)
    return store.history_frames(name), name


def _default_host() -> str:
    if settings.TELEMETRY_EMBEDDED:
        return str(settings.TELEMETRY_HOST)
    live = get_store().live_hosts()
    if len(live) == 1:
        return live[0]
    if live:
        raise HostRequired(
            f"Name the node whose history you want with ?host=NAME ({describe_live(live)}).",
            param="host",
        )
    return storage.last_host() or str(settings.TELEMETRY_HOST)


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
    fleet.reload_rules()  # the nodes this hub process holds (the others' within 10 s)


def recent_episodes(*, limit: int = 20) -> list[AlertEpisode]:
    return list(AlertEpisode.objects.all()[:limit])


def open_episodes() -> list[AlertEpisode]:
    """The alerts in force now, newest first: at most one per rule, subject and host."""
    return list(AlertEpisode.objects.filter(ended_at__isnull=True))
