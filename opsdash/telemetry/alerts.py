"""Thresholds checked against each frame, debounced into alert episodes.

Pure code, no database: the sampler feeds it frames and rules and stores what it reports
(``services.record_alert_changes``). A threshold must be crossed for ``raise_after`` ticks in a
row before an episode opens, and be clear for ``clear_after`` ticks before it ends, so one
noisy second neither raises a banner nor splits an episode in two.

Every rule reads one frame and nothing else, so the hub can evaluate the frames of each node
with the same functions. GPU heat is judged by the thermal margin (°C left before the GPU slows
itself down), which knows each board's own limits; the fixed temperature threshold is only the
fallback for a GPU whose driver does not tell its slowdown temperature. Throttling is judged by
how long a reason has been active without a break, which the frame carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opsdash.telemetry.frames import AlertFigures, Frame, GpuFigures
from opsdash.telemetry.models import AlertKind
from opsdash.telemetry.probes.gpu_health import POWER_REASONS, THERMAL_REASONS

GIB = 1024**3

DEFAULT_THRESHOLDS: dict[str, float] = {
    AlertKind.GPU_TEMPERATURE: 85.0,
    AlertKind.GPU_MEMORY: 95.0,
    AlertKind.RAM: 90.0,
    AlertKind.DISK_FREE: 10.0 * GIB,
    AlertKind.GPU_THERMAL_MARGIN: 5.0,
    AlertKind.GPU_THROTTLE: 0.0,
    AlertKind.GPU_POWER_CAP: 60.0,
    AlertKind.GPU_XID: 1.0,
    AlertKind.GPU_ECC: 1.0,
    AlertKind.GPU_RETIREMENT: 1.0,
}
UNITS = {
    AlertKind.GPU_TEMPERATURE: "°C",
    AlertKind.GPU_MEMORY: "%",
    AlertKind.RAM: "%",
    AlertKind.DISK_FREE: "bytes",
    AlertKind.GPU_THERMAL_MARGIN: "°C",
    AlertKind.GPU_THROTTLE: "s",
    AlertKind.GPU_POWER_CAP: "s",
    AlertKind.GPU_XID: "errors",
    AlertKind.GPU_ECC: "errors",
    AlertKind.GPU_RETIREMENT: "pending",
}
# Disk free space and the thermal margin alarm when they fall below the threshold; durations
# and error counts when they reach it (0 s of thermal slowdown: any); the others when they
# rise above it.
BELOW = {AlertKind.DISK_FREE, AlertKind.GPU_THERMAL_MARGIN}
AT_LEAST = {
    AlertKind.GPU_THROTTLE,
    AlertKind.GPU_POWER_CAP,
    AlertKind.GPU_XID,
    AlertKind.GPU_ECC,
    AlertKind.GPU_RETIREMENT,
}


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
    if kind in GPU_SENTENCES:
        return GPU_SENTENCES[kind].format(subject=subject, value=value, threshold=threshold)
    what = "memory" if kind == AlertKind.GPU_MEMORY else "RAM"
    return f"{subject} {what} {value:.1f}% used, above {threshold:g}%"


def breaches(frame: Frame, rules: list[Rule]) -> list[Breach]:
    """Every threshold the frame crosses now."""
    found: list[Breach] = []
    for rule in rules:
        if not rule.enabled:
            continue
        for subject, value in _values(frame, rule.kind):
            if rule.kind in BELOW:
                crossed = value < rule.threshold
            elif rule.kind in AT_LEAST:
                crossed = value >= rule.threshold
            else:
                crossed = value > rule.threshold
            if crossed:
                found.append(Breach(rule.kind, subject, value, rule.threshold))
    return found


GPU_SENTENCES: dict[str, str] = {
    AlertKind.GPU_THERMAL_MARGIN: (
        "{subject} is {value:.0f} °C from its slowdown temperature, under the "
        "{threshold:g} °C margin"
    ),
    AlertKind.GPU_THROTTLE: (
        "{subject} slowed down by heat or a hardware slowdown signal for {value:.0f} s "
        "(alert from {threshold:g} s)"
    ),
    AlertKind.GPU_POWER_CAP: (
        "{subject} held at its power cap for {value:.0f} s (alert from {threshold:g} s)"
    ),
    AlertKind.GPU_XID: (
        "{subject}: {value:.0f} critical XID error(s) in the last 10 minutes "
        "(alert from {threshold:g}); see the kernel log"
    ),
    AlertKind.GPU_ECC: (
        "{subject}: {value:.0f} uncorrected ECC error(s) since the driver loaded "
        "(alert from {threshold:g})"
    ),
    AlertKind.GPU_RETIREMENT: (
        "{subject}: {value:.0f} memory page retirement(s) or row remap(s) pending or failed; "
        "a GPU reset applies them (alert from {threshold:g})"
    ),
}


def _gpu_values(frame: Frame, kind: str) -> list[tuple[str, float]]:
    """The GPU health rules' values; ``.get`` because a frame from an older agent lacks them."""
    out: list[tuple[str, float]] = []
    for g in frame["gpus"]:
        value = _gpu_value(g, kind)
        if value is not None:
            out.append((f"GPU {g['index']}", value))
    return out


def _gpu_value(g: GpuFigures, kind: str) -> float | None:
    if kind == AlertKind.GPU_TEMPERATURE:
        # The fallback: only a GPU whose margin is unknown is held to the fixed temperature.
        return None if g.get("margin") is not None else g["temp"]
    if kind == AlertKind.GPU_THERMAL_MARGIN:
        return g.get("margin")
    if kind in (AlertKind.GPU_THROTTLE, AlertKind.GPU_POWER_CAP):
        reasons = THERMAL_REASONS if kind == AlertKind.GPU_THROTTLE else POWER_REASONS
        active = [s for name, s in (g.get("throttle") or {}).items() if name in reasons]
        return max(active) if active else None
    if kind == AlertKind.GPU_XID:
        xid = g.get("xid")
        return len(xid) if xid else None
    if kind == AlertKind.GPU_ECC:
        ecc = g.get("ecc")
        return ecc[1] if ecc and ecc[1] is not None else None
    if kind == AlertKind.GPU_RETIREMENT:
        retired, remap = g.get("retired") or [], g.get("remap") or []
        flags = [*retired[2:3], *remap[2:4]]
        return sum(f for f in flags if f) or None
    return None


def _values(frame: Frame, kind: str) -> list[tuple[str, float]]:
    if kind in GPU_KINDS:
        return _gpu_values(frame, kind)
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


GPU_KINDS = {AlertKind.GPU_TEMPERATURE, *GPU_SENTENCES}


@dataclass
class Episode:
    kind: str
    subject: str
    threshold: float
    since_ms: int
    value: float
    peak: float
    ended_ms: int | None = None
    label: str = ""  # the node's name, in fleet mode: the sentence names the node

    @property
    def message(self) -> str:
        return self._named(describe(self.kind, self.subject, self.value, self.threshold))

    @property
    def peak_message(self) -> str:
        """The sentence for the episode's worst value (what an ended episode keeps)."""
        return self._named(describe(self.kind, self.subject, self.peak, self.threshold))

    def _named(self, sentence: str) -> str:
        return f"{self.label}: {sentence}" if self.label else sentence

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
    """One host's episodes; ``label`` (a node's name, on the hub) starts each sentence."""

    def __init__(self, *, raise_after: int = 3, clear_after: int = 10, label: str = "") -> None:
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.label = label
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
                    label=self.label,
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
