"""Thresholds checked against each frame, debounced into alert episodes.

Pure code, no database: the sampler feeds it frames and rules and stores what it reports
(``services.record_alert_changes``). A threshold must be crossed for ``raise_after`` ticks in a
row before an episode opens, and be clear for ``clear_after`` ticks before it ends, so one
noisy second neither raises a banner nor splits an episode in two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opsdash.telemetry.frames import AlertFigures, Frame
from opsdash.telemetry.models import AlertKind

GIB = 1024**3

DEFAULT_THRESHOLDS: dict[str, float] = {
    AlertKind.GPU_TEMPERATURE: 85.0,
    AlertKind.GPU_MEMORY: 95.0,
    AlertKind.RAM: 90.0,
    AlertKind.DISK_FREE: 10.0 * GIB,
}
UNITS = {
    AlertKind.GPU_TEMPERATURE: "°C",
    AlertKind.GPU_MEMORY: "%",
    AlertKind.RAM: "%",
    AlertKind.DISK_FREE: "bytes",
}
# Disk free space alarms when it falls below the threshold; the others when they rise above.
BELOW = {AlertKind.DISK_FREE}


@dataclass(frozen=True)
class Rule:
    kind: str
    threshold: float
    enabled: bool = True


@dataclass(frozen=True)
class Breach:
    kind: str
    subject: str
    value: float
    threshold: float


def describe(kind: str, subject: str, value: float, threshold: float) -> str:
    """The banner's sentence."""
    if kind == AlertKind.DISK_FREE:
        return f"{subject}: {_size(value)} free, below {_size(threshold)}"
    if kind == AlertKind.GPU_TEMPERATURE:
        return f"{subject} at {value:.0f} °C, above {threshold:g} °C"
    what = "memory" if kind == AlertKind.GPU_MEMORY else "RAM"
    return f"{subject} {what} {value:.1f}% used, above {threshold:g}%"


def breaches(frame: Frame, rules: list[Rule]) -> list[Breach]:
    """Every threshold the frame crosses now."""
    found: list[Breach] = []
    for rule in rules:
        if not rule.enabled:
            continue
        for subject, value in _values(frame, rule.kind):
            crossed = value < rule.threshold if rule.kind in BELOW else value > rule.threshold
            if crossed:
                found.append(Breach(rule.kind, subject, value, rule.threshold))
    return found


def _values(frame: Frame, kind: str) -> list[tuple[str, float]]:
    if kind == AlertKind.GPU_TEMPERATURE:
        return [(f"GPU {g['index']}", g["temp"]) for g in frame["gpus"] if g["temp"] is not None]
    if kind == AlertKind.GPU_MEMORY:
        return [
            (f"GPU {g['index']}", 100.0 * g["mem_used"] / g["mem_total"])
            for g in frame["gpus"]
            if g["mem_used"] is not None and g["mem_total"]
        ]
    if kind == AlertKind.RAM:
        memory = frame["memory"]
        if not memory["total_bytes"]:
            return []
        return [("Host", 100.0 * memory["used_bytes"] / memory["total_bytes"])]
    if kind == AlertKind.DISK_FREE:
        free = frame["disk"]["models_free_bytes"]
        return [] if free is None else [("Models disk", float(free))]
    return []


@dataclass
class Episode:
    kind: str
    subject: str
    threshold: float
    since_ms: int
    value: float
    peak: float
    ended_ms: int | None = None

    @property
    def message(self) -> str:
        return describe(self.kind, self.subject, self.value, self.threshold)

    def as_figures(self) -> AlertFigures:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "since": self.since_ms,
            "message": self.message,
        }


@dataclass
class Changes:
    opened: list[Episode] = field(default_factory=list)
    closed: list[Episode] = field(default_factory=list)


class AlertTracker:
    def __init__(self, *, raise_after: int = 3, clear_after: int = 10) -> None:
        self.raise_after = raise_after
        self.clear_after = clear_after
        self._above: dict[tuple[str, str], int] = {}  # consecutive ticks crossed, not yet open
        self._clear: dict[tuple[str, str], int] = {}  # consecutive ticks clear, still open
        self.active: dict[tuple[str, str], Episode] = {}

    def update(self, found: list[Breach], now_ms: int) -> Changes:
        changes = Changes()
        crossed = {(b.kind, b.subject): b for b in found}
        for key, breach in crossed.items():
            episode = self.active.get(key)
            if episode is not None:
                self._clear.pop(key, None)
                episode.value, episode.threshold = breach.value, breach.threshold
                worse = min if breach.kind in BELOW else max
                episode.peak = worse(episode.peak, breach.value)
                continue
            self._above[key] = self._above.get(key, 0) + 1
            if self._above[key] >= self.raise_after:
                del self._above[key]
                episode = Episode(
                    kind=breach.kind,
                    subject=breach.subject,
                    threshold=breach.threshold,
                    since_ms=now_ms,
                    value=breach.value,
                    peak=breach.value,
                )
                self.active[key] = episode
                changes.opened.append(episode)
        for key in list(self._above):
            if key not in crossed:
                del self._above[key]
        for key, episode in list(self.active.items()):
            if key in crossed:
                continue
            self._clear[key] = self._clear.get(key, 0) + 1
            if self._clear[key] >= self.clear_after:
                del self._clear[key], self.active[key]
                episode.ended_ms = now_ms
                changes.closed.append(episode)
        return changes

    def figures(self) -> list[AlertFigures]:
        return [episode.as_figures() for episode in self.active.values()]


def _size(value: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"
