"""What the existing alert sources call: a telemetry episode opened, a node gone offline.

Both sources already debounce into episodes (``opsdash.telemetry.alerts``; the health sweep's
conditional status update), so keying the notification by the episode makes it go out once
per episode, not every tick, and once however many hub processes see it.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote, urlencode

from opsdash.notify.models import EventKind, Notification
from opsdash.notify.services import emit
from opsdash.telemetry.models import AlertEpisode


def emit_telemetry_episode(*, episode: AlertEpisode) -> Notification | None:
    return emit(
        kind=EventKind.TELEMETRY,
        key=f"telemetry:{episode.pk}",
        subject=f"{episode.host}: {episode.get_kind_display()} alert",
        message=episode.message,
        link="/telemetry/?" + urlencode({"host": episode.host}),
        data={
            "host": episode.host,
            "alert": episode.kind,
            "subject": episode.subject,
            "threshold": episode.threshold,
            "value": episode.peak,
            "started_at": episode.started_at.isoformat(),
        },
    )


def emit_node_offline(
    *, name: str, last_seen: datetime, silent_seconds: int
) -> Notification | None:
    return emit(
        kind=EventKind.NODE,
        key=f"node:{name}:offline:{last_seen.isoformat()}",
        subject=f"Node {name} lost",
        message=(
            f"Node {name} has sent no heartbeat for {silent_seconds} s (last seen "
            f"{last_seen:%Y-%m-%d %H:%M:%S} UTC) and is now offline; its runs go to other nodes."
        ),
        link=f"/nodes/{quote(name)}/",
        data={"node": name, "last_seen": last_seen.isoformat(), "silent_seconds": silent_seconds},
    )
