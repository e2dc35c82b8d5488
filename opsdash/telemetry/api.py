"""/api/telemetry/: the latest frame, history for the range picker, alerts.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.
"""

from typing import Any, Literal

from ninja import Router

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import responses
from opsdash.telemetry import services
from opsdash.telemetry.models import AlertEpisode

router = Router(tags=["telemetry"])

RangeName = Literal["5m", "15m", "1h", "24h", "7d"]


@router.get(
    "/snapshot",
    auth=api_auth(Cap.VIEW_TELEMETRY),
    response=responses({200: dict[str, Any]}, 400, 404, 422, 503),
    url_name="telemetry_snapshot",
)
def snapshot(request: Any, host: str | None = None) -> dict[str, Any]:
    """The latest frame, in the shape the websocket sends (DESIGN.md), of node ``host``.

    Without ``host``: the local host in embedded mode; on a hub, its one live node, or 400
    naming the live nodes when there are several. 404 when ``host`` sends no telemetry."""
    return dict(services.snapshot(host=host))


@router.get(
    "/snapshots",
    auth=api_auth(Cap.VIEW_TELEMETRY),
    response=responses({200: dict[str, Any]}, 503),
    url_name="telemetry_snapshots",
)
def snapshots(request: Any) -> dict[str, Any]:
    """``{"items": [frame…], "count"}``: the latest frame of every live node, by name."""
    items = [dict(f) for f in services.snapshots()]
    return {"items": items, "count": len(items)}


@router.get(
    "/nodes",
    auth=api_auth(Cap.VIEW_TELEMETRY),
    response=responses({200: dict[str, Any]}, 503),
    url_name="telemetry_nodes",
)
def nodes(request: Any) -> dict[str, Any]:
    """``{"items": [{"host", "status", "recorded", "live", "age_seconds"}], "count"}``: the
    telemetry page's node cards without their frames. ``status`` is the node's recorded one on
    a hub (pending, healthy, unhealthy, offline, draining; ``recorded`` true), else from its
    frames' age; ``live`` when its frames reach this hub."""
    items = [
        {
            "host": card["host"],
            "status": card["status"],
            "recorded": card["recorded"],
            "live": card["live"],
            "age_seconds": card["age_seconds"],
        }
        for card in services.node_cards()
    ]
    return {"items": items, "count": len(items)}


@router.get(
    "/history",
    auth=api_auth(Cap.VIEW_TELEMETRY),
    response=responses({200: dict[str, Any]}, 400, 404, 422, 503),
    url_name="telemetry_history",
)
def history(request: Any, range: RangeName = "1h", host: str | None = None) -> dict[str, Any]:
    """``{"range", "host", "step_seconds", "t": [epoch ms], "series": {name: {"min", "avg",
    "max"}}}`` of node ``host`` (chosen as for the snapshot): 5m and 15m at 1 s from memory;
    1h, 24h and 7d from per-minute rows, merged into 60 s, 120 s and 900 s points. Missing
    points are null."""
    return dict(services.history(range_name=range, host=host))


@router.get(
    "/alerts",
    auth=api_auth(Cap.VIEW_TELEMETRY),
    response=responses({200: dict[str, Any]}, 422),
    url_name="telemetry_alerts",
)
def alerts(request: Any, limit: int = 50) -> dict[str, Any]:
    """Thresholds in force and the latest alert episodes (``ended_at`` null while active)."""
    episodes = services.recent_episodes(limit=max(1, min(limit, 500)))
    return {
        "thresholds": [
            {"kind": r.kind, "threshold": r.threshold, "enabled": r.enabled}
            for r in services.alert_rules()
        ],
        "items": [_episode_json(e) for e in episodes],
        "count": len(episodes),
    }


def _episode_json(episode: AlertEpisode) -> dict[str, Any]:
    return {
        "kind": episode.kind,
        "host": episode.host,
        "subject": episode.subject,
        "threshold": episode.threshold,
        "peak": episode.peak,
        "message": episode.message,
        "started_at": episode.started_at.isoformat(),
        "ended_at": episode.ended_at.isoformat() if episode.ended_at else None,
    }
