"""Hub side of fleet telemetry: what happens to each frame an agent sends.

``receive_frame(node, text)`` is called by the hub's agent consumer (``opsdash.fleet.consumers``)
on the event loop, for every frame of the node whose socket this process holds, so it is cheap:
one parse; the frame's ``host`` made the node's name (an agent cannot speak for another node);
the hub's own alert state put in its ``alerts`` (re-encoded only when that changes anything);
one ``group_send`` to the ``telemetry`` group, so every hub process's pages, snapshot,
``/metrics`` and history get it through the channel layer (Redis); and the frame kept in this
process's store at once.

The process holding a node also folds its frames into that node's minute rollup and checks
them against the thresholds in force (one ``MinuteAccumulator`` and ``AlertTracker`` per node,
as a sampler does for its own host): the rows and alert episodes carry the node's name, and the
banners name it. The agent's sampler runs with ``persist=False`` and holds no database
credential, so the hub does this for it. Database work goes to one writer thread, batched: a
slow database delays a row, never a frame.

A node whose socket moves to another hub process (a hub restart, a reconnect) continues there:
the new holder closes the episodes the old one left open (they reopen if still true), and a
minute both wrote is merged by ``storage.save_minute``. ``forget_node`` (the consumer calls it
when the socket closes) stores the minute so far; a holder idle longer than the unhealthy limit
is forgotten the same way.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from opsdash.telemetry import alerts, frames, storage
from opsdash.telemetry.history import MinuteAccumulator, MinuteRow
from opsdash.telemetry.store import get_store

logger = logging.getLogger(__name__)

RULES_SECONDS = 10.0
SWEEP_SECONDS = 5.0


@dataclass
class _Held:
    """What this process keeps for a node whose socket it holds."""

    node: str
    tracker: alerts.AlertTracker
    minutes: MinuteAccumulator = field(default_factory=MinuteAccumulator)
    seen: float = field(default_factory=time.monotonic)
    bad_frames: int = 0


class _Writer:
    """One thread that stores minute rows and alert changes, several at a time."""

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = False

    def submit(self, job: Any, *args: Any) -> None:
        self._jobs.append((job, args))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="opsdash-fleet-telemetry-db", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every job so far is done (tests; shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._jobs or self._busy) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._jobs

    def _run(self) -> None:
        from django.db import close_old_connections

        while True:
            self._wake.wait(timeout=30)
            self._wake.clear()
            if not self._jobs:
                continue
            self._busy = True
            close_old_connections()
            try:
                while self._jobs:
                    job, args = self._jobs.popleft()
                    try:
                        job(*args)
                    except Exception as exc:  # a row lost, never the thread
                        logger.warning("fleet telemetry database work failed: %s", exc)
            finally:
                self._busy = False


@dataclass
class _Hub:
    held: dict[str, _Held] = field(default_factory=dict)
    rules: list[alerts.Rule] = field(
        default_factory=lambda: [alerts.Rule(k, v) for k, v in alerts.DEFAULT_THRESHOLDS.items()]
    )
    rules_at: float = -1e18
    swept_at: float = field(default_factory=time.monotonic)
    writer: _Writer = field(default_factory=_Writer)


_hub = _Hub()


async def receive_frame(node_name: str, text: str) -> bool:
    """One telemetry frame of ``node_name``, from its agent's socket on this process.

    ``text`` is the frame's JSON (the agent's ``frame`` message is the frame itself, whose
    ``type`` is ``frame``); a ``{"type": "frame", "frame": {...}}`` wrapper is read too. False
    (and the frame dropped, logged once per node) when it is not a frame.
    """
    held = _held(node_name)
    try:
        frame = json.loads(text)
        if isinstance(frame, dict) and isinstance(frame.get("frame"), dict):
            frame, text = frame["frame"], ""
        t_ms = int(frame["t"])
        series = frames.series_of(frame)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        held.bad_frames += 1
        if held.bad_frames == 1:
            logger.warning("node %s sent a telemetry frame OpsDash cannot read; dropped", node_name)
        return False
    hub = _hub
    now = time.monotonic()
    held.seen = now
    if now - hub.rules_at >= RULES_SECONDS:
        hub.rules_at = now
        hub.writer.submit(_load_rules)
    changes = held.tracker.update(alerts.breaches(frame, hub.rules), t_ms)
    figures = held.tracker.figures()
    if not text or frame.get("host") != node_name or frame.get("alerts") != figures:
        frame["host"], frame["alerts"] = node_name, figures
        text = frames.encode(frame)
    lite = frames.encode(frames.lite(frame))
    row = held.minutes.add(t_ms, series)
    if row is not None:
        hub.writer.submit(_save_minute, node_name, row)
    if changes.opened or changes.closed:
        hub.writer.submit(_record_changes, node_name, changes)
    if now - hub.swept_at >= SWEEP_SECONDS:
        hub.swept_at = now
        _sweep(now)

    get_store().put(node_name, text, t=t_ms, lite=lite)
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "telemetry.frame", "host": node_name, "text": text, "t": t_ms}
        card = frames.encode(frames.card(frame))
        await layer.group_send(frames.GROUP, message | {"lite": lite, "card": card})
    return True


def forget_node(node_name: str) -> None:
    """The node's socket left this process: store its minute so far, drop its state here."""
    held = _hub.held.pop(node_name, None)
    if held is None:
        return
    row = held.minutes.flush()
    if row is not None:
        _hub.writer.submit(_save_minute, node_name, row)


def reload_rules() -> None:
    """Read the thresholds again at the next frame (an admin changed them)."""
    _hub.rules_at = -1e18


def drain(timeout: float = 10.0) -> bool:
    """Wait for the database work queued so far (tests; shutdown)."""
    return _hub.writer.drain(timeout)


def stop() -> None:
    """Store every held node's minute so far (the background service's stop)."""
    for node in list(_hub.held):
        forget_node(node)
    drain()


def reset() -> None:
    """Forget every node's state (tests; a forked child)."""
    global _hub
    _hub = _Hub()


def _held(node_name: str) -> _Held:
    held = _hub.held.get(node_name)
    if held is None:
        held = _hub.held[node_name] = _Held(node_name, alerts.AlertTracker(label=node_name))
        # A previous holder (another process, or this one before a restart) may have left
        # episodes open: they end now, and reopen if still true.
        _hub.writer.submit(_close_open, node_name, datetime.now(UTC))
    return held


def _sweep(now: float) -> None:
    idle = float(settings.NODE_UNHEALTHY_SECONDS)
    for node in [n for n, h in _hub.held.items() if now - h.seen > idle]:
        forget_node(node)


# --- on the writer thread --------------------------------------------------------------------


def _load_rules() -> None:
    _hub.rules = storage.alert_rules()


def _save_minute(node: str, row: MinuteRow) -> None:
    storage.save_minute(host=node, row=row)


def _record_changes(node: str, changes: alerts.Changes) -> None:
    storage.record_alert_changes(host=node, changes=changes)


def _close_open(node: str, at: datetime) -> None:
    storage.close_open_episodes(host=node, at=at)
