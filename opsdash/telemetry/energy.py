"""This host's energy counters, as the one sampler records them: what savings asks for a run.

``host_energy()`` takes a reading now (a run has just ended) and answers with the record of the
sampler of this process, or None when this host has no energy counter (no readable RAPL, no
NVIDIA GPU): then savings estimates. In embedded mode the first call starts the sampler on a
host that has counters, as the first priced run started the old energy meter; a process that is
not embedded (its web processes) uses the sampler it runs, if any.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from opsdash.telemetry.probes.energy import EnergyRecorder
from opsdash.telemetry.probes.nvml import library_present
from opsdash.telemetry.probes.rapl import RaplProbe
from opsdash.telemetry.sampler import Sampler, current_sampler, get_sampler


@dataclass(frozen=True)
class HostEnergy:
    """Energy between two instants (epoch seconds) on this host's devices."""

    recorder: EnergyRecorder

    def energy_uj(self, device: str, t0: float, t1: float) -> float | None:
        """µJ the device used between ``t0`` and ``t1``; None unless the record covers both."""
        return self.recorder.energy_uj(device, t0, t1)

    def energy_between(self, *, devices: Iterable[str], t0: float, t1: float) -> float | None:
        """µJ these devices used together; None unless the record covers every one."""
        total = 0.0
        for device in devices:
            energy = self.energy_uj(device, t0, t1)
            if energy is None:
                return None
            total += energy
        return total

    def cpu_seconds_between(self, *, pid: int, t0: float, t1: float) -> float | None:
        """CPU seconds a watched process (a runner, the server) used between two instants."""
        return self.recorder.cpu_seconds_between(pid, t0, t1)

    def devices_for(self, *, pids: Iterable[int | None]) -> frozenset[str]:
        """The CPU packages, plus the GPUs on which NVML listed any of ``pids``."""
        counted = self.recorder.devices
        cpus = {d for d in counted if d.startswith("cpu:")}
        gpus = self.recorder.devices_of(pid for pid in pids if pid) & counted
        return frozenset(cpus | gpus)


_UNSET = object()
_override: object = _UNSET
_present: bool | None = None
_lock = threading.Lock()


def host_energy() -> HostEnergy | None:
    """The sampler's energy record with a reading taken now; None without counters."""
    sampler = _sampler()
    if sampler is None:
        return None
    sampler.record_energy()
    if not sampler.energy.devices:
        return None
    return HostEnergy(sampler.energy)


def use_sampler(sampler: Sampler | None | object = _UNSET) -> None:
    """Answer from this sampler (None: as a host without counters); no argument: as usual.
    For tests, which drive a sampler of their own."""
    global _override
    _override = sampler


def _sampler() -> Sampler | None:
    if _override is not _UNSET:
        return _override  # type: ignore[return-value]
    current = current_sampler()
    if current is not None:
        return current
    if settings.TELEMETRY_EMBEDDED and _has_counters():
        return get_sampler()
    return None


def _has_counters() -> bool:
    """Whether this host has anything to measure (checked once per process)."""
    global _present
    with _lock:
        if _present is None:
            _present = bool(RaplProbe().zones()) or library_present()
        return _present
