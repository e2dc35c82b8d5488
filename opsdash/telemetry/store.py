"""The fleet's telemetry as one hub process holds it: every node's latest frame and 15 minutes.

Fleet mode only (``OPSDASH_TELEMETRY_EMBEDDED=false``): each hub web process keeps, per node,
the newest frame's text and a ring of light frames (``frames.lite``), fed by its member of the
``telemetry`` group (``opsdash.telemetry.relay``), so ``/api/telemetry/snapshot?host=``,
``/metrics``, history and the page work on any hub process, whichever one holds the node's
socket. A node that has sent nothing for ``OPSDASH_NODE_OFFLINE_SECONDS`` drops out of ``live``
and is forgotten.

Cheap by construction, because twenty nodes at 1 s reach every hub process: the process that
receives a node's frame from its agent parses it once and sends the light frame's text beside
the full one (``opsdash.telemetry.fleet``), so the other processes store texts and parse a
frame only when a reader asks for it. Thread-safe: the relay writes on the event loop, views
read from Django's threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from opsdash.telemetry import frames
from opsdash.telemetry.frames import Frame

HISTORY_MS = 15 * 60 * 1000


@dataclass
class _Node:
    host: str
    text: str
    t: int
    seen: float  # time.monotonic() of the last frame: the hub's clock, not the node's
    ring: deque[tuple[int, str]]
    frame: Frame | None = None  # ``text`` parsed, on first read
    history: str | None = None  # the history message, built on first read after each frame


@dataclass
class FleetStore:
    """Per host: the latest frame and the last 15 minutes of light frames."""

    offline_seconds: float = 60.0
    ring_size: int = 900
    _nodes: dict[str, _Node] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def put(self, host: str, text: str, *, t: int | None = None, lite: str | None = None) -> bool:
        """Store one frame of ``host`` (``t`` and ``lite`` save a parse when the sender knows
        them). False when it is not newer than the one stored (the same frame twice)."""
        parsed: Frame | None = None
        if t is None or lite is None:
            parsed = json.loads(text)
            assert parsed is not None
            t = int(parsed["t"])
            lite = frames.encode(frames.lite(parsed))
        now = time.monotonic()
        with self._lock:
            node = self._nodes.get(host)
            if node is None:
                node = self._nodes[host] = _Node(
                    host, text, t, now, deque(maxlen=max(1, self.ring_size))
                )
            elif t <= node.t:
                return False
            node.text, node.t, node.seen, node.frame, node.history = text, t, now, parsed, None
            node.ring.append((t, lite))
            while node.ring and node.ring[0][0] < t - HISTORY_MS:
                node.ring.popleft()
            self._lock.notify_all()
        return True

    def live_hosts(self) -> list[str]:
        """Hosts heard from within the offline limit, by name; the others are forgotten."""
        cutoff = time.monotonic() - self.offline_seconds
        with self._lock:
            for host in [h for h, n in self._nodes.items() if n.seen < cutoff]:
                del self._nodes[host]
            return sorted(self._nodes)

    def latest(self, host: str) -> Frame | None:
        node = self._live(host)
        if node is None:
            return None
        with self._lock:
            text, frame = node.text, node.frame
        if frame is None:
            frame = json.loads(text)
            with self._lock:
                if node.text is text:  # no newer frame came meanwhile
                    node.frame = frame
        return frame

    def latest_text(self, host: str) -> str | None:
        node = self._live(host)
        return None if node is None else node.text

    def age_seconds(self, host: str) -> float | None:
        """Seconds since ``host``'s last frame reached this process (None: not live)."""
        node = self._live(host)
        return None if node is None else time.monotonic() - node.seen

    def history_frames(self, host: str) -> list[str]:
        node = self._live(host)
        if node is None:
            return []
        with self._lock:
            return [text for _, text in node.ring]

    def history_text(self, host: str, *, seconds: float | None = None) -> str | None:
        """``{"type": "history", "host", "frames": [...]}`` (the last ``seconds`` only, when
        given), joined from the stored texts: the full one once per frame however many pages
        open."""
        node = self._live(host)
        if node is None:
            return None
        with self._lock:
            if seconds is not None:
                since = node.t - seconds * 1000
                return _history(host, [text for t, text in node.ring if t >= since])
            if node.history is None:
                node.history = _history(host, [text for _, text in node.ring])
            return node.history

    def wait_for_any(self, timeout: float, host: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a frame (of ``host``, or of any node): a process whose
        listener has just started has heard nobody yet."""
        with self._lock:
            return self._lock.wait_for(
                lambda: (host in self._nodes) if host else bool(self._nodes), timeout=timeout
            )

    def clear(self) -> None:
        with self._lock:
            self._nodes.clear()

    def _live(self, host: str) -> _Node | None:
        with self._lock:
            node = self._nodes.get(host)
        if node is None or node.seen < time.monotonic() - self.offline_seconds:
            return None
        return node


def _history(host: str, texts: list[str]) -> str:
    joined = ",".join(texts)
    return '{"type":"history","host":' + frames.encode(host) + ',"frames":[' + joined + "]}"


def _from_settings() -> FleetStore:
    from django.conf import settings

    tick = max(0.1, settings.TELEMETRY_TICK_MS / 1000)
    return FleetStore(
        offline_seconds=float(settings.NODE_OFFLINE_SECONDS),
        ring_size=round(HISTORY_MS / 1000 / tick) + 60,
    )


_store: FleetStore | None = None
_store_lock = threading.Lock()


def get_store() -> FleetStore:
    """This process's store (made on first use, from the settings then in force)."""
    global _store
    with _store_lock:
        if _store is None:
            _store = _from_settings()
        return _store


def reset_store() -> None:
    """Forget every node (tests; a forked child)."""
    global _store
    with _store_lock:
        _store = None


def describe_live(hosts: list[str]) -> str:
    """The live nodes, as a sentence's tail."""
    if not hosts:
        return "no node is sending telemetry"
    return "live nodes: " + ", ".join(hosts)
