"""The energy counters' recent past: a bounded in-memory record the sampler writes every tick.

Each device (``cpu:intel-rapl:0``, ``gpu:0``) has a cumulative counter in microjoules. The
recorder keeps, per device, the running total since its first sample, with wrap-arounds added
back (RAPL restarts at ``max_energy_range_uj``; a counter without a known range that goes back
was reset, by a driver reload, and counts nothing for that step). ``energy_uj(device, t0, t1)``
interpolates between samples and is None unless samples cover both instants. It also remembers
on which GPUs each process was seen, so a caller can ask for the devices of a runner, and the
CPU seconds of the processes the sampler watches (the runners and the server).

Times are epoch seconds. Thread-safe: the sampler's thread writes, pricing reads.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence

KEEP_SECONDS = 3 * 3600.0  # runs longer than this fall back to an estimate


class EnergyRecorder:
    def __init__(self, *, keep_seconds: float = KEEP_SECONDS) -> None:
        self.keep_seconds = keep_seconds
        self._times: dict[str, list[float]] = {}
        self._totals: dict[str, list[int]] = {}
        self._last_raw: dict[str, int] = {}
        self._process_devices: dict[int, dict[str, float]] = {}  # pid → device → last seen
        self._cpu: dict[int, tuple[list[float], list[float]]] = {}  # pid → (times, CPU seconds)
        self._lock = threading.Lock()

    @property
    def devices(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._times)

    def record(
        self, at: float, raw_uj: Mapping[str, int], wraps: Mapping[str, int | None] | None = None
    ) -> None:
        """One reading of some counters at ``at``; an instant not after a device's last
        sample is ignored for that device."""
        wraps = wraps or {}
        with self._lock:
            for device, raw in raw_uj.items():
                times = self._times.setdefault(device, [])
                totals = self._totals.setdefault(device, [])
                if times and at <= times[-1]:
                    continue
                last = self._last_raw.get(device)
                if last is None or not totals:
                    total = 0
                else:
                    delta = raw - last
                    if delta < 0:
                        wrap = wraps.get(device)
                        delta = delta + wrap if wrap else 0
                    total = totals[-1] + delta
                self._last_raw[device] = raw
                times.append(at)
                totals.append(total)
                cut = bisect.bisect_left(times, at - self.keep_seconds)
                if cut > 64:  # trim in batches
                    del times[:cut], totals[:cut]

    def note_processes(self, at: float, process_devices: Mapping[int, Iterable[str]]) -> None:
        """Which devices each process was using at ``at`` (NVML's compute process lists)."""
        with self._lock:
            for pid, devices in process_devices.items():
                seen = self._process_devices.setdefault(pid, {})
                for device in devices:
                    seen[device] = at
            cutoff = at - self.keep_seconds
            for pid in list(self._process_devices):
                seen = self._process_devices[pid]
                for device in [d for d, t in seen.items() if t < cutoff]:
                    del seen[device]
                if not seen:
                    del self._process_devices[pid]

    def note_cpu_seconds(self, at: float, cpu_seconds: Mapping[int, float]) -> None:
        """The CPU time (user + system, cumulative) of each watched process at ``at``; a
        process no longer listed is forgotten."""
        with self._lock:
            for pid in [p for p in self._cpu if p not in cpu_seconds]:
                del self._cpu[pid]
            for pid, seconds in cpu_seconds.items():
                times, values = self._cpu.setdefault(pid, ([], []))
                if times and at <= times[-1]:
                    continue
                times.append(at)
                values.append(seconds)
                cut = bisect.bisect_left(times, at - self.keep_seconds)
                if cut > 64:
                    del times[:cut], values[:cut]

    def cpu_seconds_between(self, pid: int, t0: float, t1: float) -> float | None:
        """CPU seconds ``pid`` used between ``t0`` and ``t1``; None unless samples cover both."""
        with self._lock:
            if pid not in self._cpu:
                return None
            times, values = self._cpu[pid]
            start, end = _interpolate(times, values, t0), _interpolate(times, values, t1)
        if start is None or end is None:
            return None
        return max(0.0, end - start)

    def devices_of(self, pids: Iterable[int]) -> frozenset[str]:
        """The devices on which any of ``pids`` was seen within the record."""
        with self._lock:
            return frozenset(d for pid in pids for d in self._process_devices.get(pid, {}))

    def energy_uj(self, device: str, t0: float, t1: float) -> float | None:
        """Energy the device used between ``t0`` and ``t1``; None unless samples cover both."""
        with self._lock:
            if device not in self._times:
                return None
            start, end = self._at(device, t0), self._at(device, t1)
        if start is None or end is None:
            return None
        return max(0.0, end - start)

    def _at(self, device: str, t: float) -> float | None:
        return _interpolate(self._times[device], self._totals[device], t)


def _interpolate(times: list[float], values: Sequence[float], t: float) -> float | None:
    if not times or t < times[0] or t > times[-1]:
        return None
    i = bisect.bisect_left(times, t)
    if times[i] == t:
        return float(values[i])
    t0, t1 = times[i - 1], times[i]
    v0, v1 = values[i - 1], values[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
