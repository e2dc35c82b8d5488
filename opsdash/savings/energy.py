"""How much energy a run used: measured from hardware counters where readable, else estimated.

This module does the costing side only. The counters are read by the host's one sampler
(``opsdash.telemetry.sampler``, through ``telemetry/probes/``), which records them every tick;
``host_energy()`` (``opsdash.telemetry.energy``) answers "how much energy did these devices use
between t0 and t1" from that record, taking one more reading at the moment it is asked.

**Measured.** The counters are NVIDIA GPUs' total-energy counter (NVML, millijoules since the
driver loaded) and the CPU packages' RAPL counters (``/sys/class/powercap/intel-rapl:N/energy_uj``,
which restart at ``max_energy_range_uj``: the record adds the range back, a decrease is a wrap,
not negative energy). A run's energy on a device is the counter's rise between its start and
end, interpolated between samples; during any stretch in which other runs on the same device
were running too, that stretch's energy is split evenly between them ("shared by overlap"). The
devices of a run are the CPU packages plus the GPUs on which NVML listed the run's runner
process. A run is *measured* only when every device's counter covered its whole span; otherwise
it is estimated.

Package counters see the whole chip, idle draw and other processes included, so measured figures
are what the hardware drew while the run ran, not a marginal cost.

**Estimated** (this is what most machines get: RAPL is root-only since Linux 5.10, VMs and
containers rarely expose it, and NVML needs an NVIDIA GPU). The runner reports the CPU time its
process used for the generation (all threads: what llama.cpp actually kept busy), so
``energy = OPSDASH_CPU_WATTS × cpu_seconds``, the wattage being what one fully busy logical CPU
draws. CPU time rather than wall time, because a runner waiting on a queue or a slow client
burns nothing, and a run using 2 of 16 threads should not be charged for 16. When CPU time is
missing but the runner reported a duration, it is ``duration × logical CPUs × watts`` (every
CPU busy: an upper bound). With neither (the server died under the run) the energy is 0 and the
run says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Protocol

from opsdash.savings import conf
from opsdash.telemetry.energy import host_energy as host_energy  # what services measure with
from opsdash.telemetry.probes.energy import KEEP_SECONDS as KEEP_SECONDS


class EnergyRecord(Protocol):
    def energy_uj(self, device: str, t0: float, t1: float) -> float | None: ...


class HostMeter(EnergyRecord, Protocol):
    """A host's energy record (``telemetry.energy.HostEnergy``): counters and who used them."""

    def devices_for(self, *, pids: Iterable[int | None]) -> frozenset[str]: ...


@dataclass(frozen=True)
class Span:
    """When a run ran (epoch seconds) and on which devices."""

    start: float
    end: float
    devices: frozenset[str]


def measured_energy_uj(meter: EnergyRecord, span: Span, others: Sequence[Span]) -> float | None:
    """The run's share of its devices' energy; None when a counter does not cover the span.

    The span is cut wherever another run on the same device starts or ends; each piece's energy
    is divided by the number of runs (this one included) running during it.
    """
    if not span.devices or span.end < span.start:
        return None
    total = 0.0
    for device in sorted(span.devices):
        if meter.energy_uj(device, span.start, span.end) is None:
            return None
        sharing = [o for o in others if device in o.devices]
        cuts = {span.start, span.end}
        cuts.update(t for o in sharing for t in (o.start, o.end) if span.start < t < span.end)
        for a, b in pairwise(sorted(cuts)):
            energy = meter.energy_uj(device, a, b)
            if energy is None:
                return None
            runs = 1 + sum(1 for o in sharing if o.start < b and o.end > a)
            total += energy / runs
    return total


@dataclass(frozen=True)
class EnergyEstimate:
    energy_mj: int
    basis: str


def estimated_energy(
    *,
    cpu_seconds: float | None,
    duration_seconds: float | None,
    watts: Decimal | None = None,
    cpus: int | None = None,
) -> EnergyEstimate:
    """The CPU-time estimate described at the top of this module."""
    watts = conf.CPU_WATTS if watts is None else watts
    if cpu_seconds is not None and cpu_seconds >= 0:
        seconds = Decimal(str(cpu_seconds))
        return EnergyEstimate(
            int((watts * seconds * 1000).to_integral_value()),
            f"{seconds:.3f} CPU-seconds × {watts} W per busy CPU",
        )
    if duration_seconds is not None and duration_seconds >= 0:
        cpus = cpus or os.cpu_count() or 1
        seconds = Decimal(str(duration_seconds))
        return EnergyEstimate(
            int((watts * seconds * cpus * 1000).to_integral_value()),
            f"no CPU time recorded: {seconds:.3f} s × {cpus} CPUs × {watts} W (upper bound)",
        )
    return EnergyEstimate(0, "no runner timing recorded (the run never reached a runner)")


@dataclass(frozen=True)
class EnergyFigures:
    """A run's energy as priced: ``source`` "measured" or "estimated" (``EnergySource``'s
    values), what it is based on, and the devices measured."""

    energy_mj: int
    source: str
    basis: str
    devices: list[str] = field(default_factory=list)


def run_energy_figures(
    meter: HostMeter | None,
    *,
    pid: int | None,
    start: float,
    end: float | None,
    others: Callable[[frozenset[str]], Sequence[Span]],
    cpu_seconds: float | None,
    duration_seconds: float | None,
) -> EnergyFigures:
    """Measured when ``meter`` (the host's counters, None without any) covered the whole run,
    from ``start`` to ``end`` (epoch seconds) on the CPU packages and its runner ``pid``'s
    GPUs, shared by overlap with ``others(devices)`` (the host's other runs); else the CPU-time
    estimate. Framework-free, so the embedded path (``services.run_energy``, other runs from the
    ledger) and a fleet agent (other runs from its own generations) compute it alike.
    """
    if meter is not None and end is not None:
        devices = meter.devices_for(pids=[pid])
        span = Span(start, end, devices)
        spans = others(devices)
        measured = measured_energy_uj(meter, span, spans)
        if measured is not None:
            shared = sum(1 for o in spans if o.start < span.end and o.end > span.start)
            basis = f"{', '.join(sorted(devices))} energy counters"
            if shared:
                basis += f", shared with {shared} overlapping run(s)"
            return EnergyFigures(round(measured / 1000), "measured", basis, sorted(devices))
    estimate = estimated_energy(cpu_seconds=cpu_seconds, duration_seconds=duration_seconds)
    return EnergyFigures(estimate.energy_mj, "estimated", estimate.basis)
