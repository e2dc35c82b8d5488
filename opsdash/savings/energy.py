"""How much energy a run used: measured from hardware counters where readable, else estimated.

**Measured.** A background sampler (started with the first priced run of the process) reads every
cumulative energy counter this host exposes once a second: NVIDIA GPUs' total-energy counter
(NVML, millijoules since the driver loaded) and the CPU packages' RAPL counters
(``/sys/class/powercap/intel-rapl:N/energy_uj``, which restart at ``max_energy_range_uj``: a
decrease between two samples is a wrap, not negative energy). A run's energy on a device is the
counter's rise between its start and end, interpolated between samples; during any stretch in
which other runs on the same device were running too, that stretch's energy is split evenly
between them ("shared by overlap"). The devices of a run are the CPU packages plus the GPUs on
which NVML lists the run's runner process. A run is *measured* only when every device's counter
covered its whole span; otherwise it is estimated.

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

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from opsdash.savings import conf

logger = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
SAMPLE_SECONDS = 1.0
KEEP_SECONDS = 3 * 3600.0  # runs longer than this fall back to an estimate


@dataclass(frozen=True)
class Counter:
    """One cumulative energy counter: ``read_uj()`` in microjoules, restarting at ``wrap_uj``."""

    device: str
    kind: Literal["cpu", "gpu"]
    read_uj: Callable[[], int]
    wrap_uj: int | None = None


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_counters(root: Path = POWERCAP) -> list[Counter]:
    """Readable top-level RAPL package counters (sub-zones are parts of their package)."""
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        energy = zone / "energy_uj"
        try:
            _read_int(energy)
        except (OSError, ValueError):
            continue  # present but unreadable: root-only since Linux 5.10 (CVE-2020-8694)
        try:
            wrap: int | None = _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):
            wrap = None
        found.append(Counter(f"cpu:{zone.name}", "cpu", partial(_read_int, energy), wrap))
    return found


def _pynvml() -> Any:
    try:
        import pynvml  # nvidia-ml-py; only a GPU host has the library behind it
    except ImportError:
        return None
    return pynvml


def nvml_counters(nvml: Any = None) -> list[Counter]:
    """The total-energy counters of the NVIDIA GPUs (Volta or newer); none without NVML."""
    nvml = nvml if nvml is not None else _pynvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
    except Exception:  # NVMLError: no library, no driver; the estimate takes over
        return []
    found = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:  # older GPUs have no energy counter
            continue

        def read(handle: Any = handle) -> int:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) * 1000  # mJ → µJ

        found.append(Counter(f"gpu:{index}", "gpu", read, None))
    return found


def gpus_of_process(pid: int | None, nvml: Any = None) -> set[str]:
    """The GPUs on which NVML lists ``pid`` as a compute process."""
    nvml = nvml if nvml is not None else _pynvml()
    if not pid or nvml is None:
        return set()
    devices = set()
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if any(p.pid == pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)):
                devices.add(f"gpu:{index}")
    except Exception:
        logger.debug("NVML could not list the processes of the GPUs", exc_info=True)
    return devices


class EnergyMeter:
    """Samples counters into a short history; answers "how much energy between t0 and t1".

    Times are epoch seconds. Thread-safe: the sampler thread writes, pricing reads.
    """

    def __init__(
        self,
        counters: Iterable[Counter],
        *,
        nvml: Any = None,
        keep_seconds: float = KEEP_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = {c.device: c for c in counters}
        self.nvml = nvml
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._times: dict[str, list[float]] = {d: [] for d in self.counters}
        self._totals: dict[str, list[int]] = {d: [] for d in self.counters}
        self._last_raw: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def available(self) -> bool:
        return bool(self.counters)

    def sample(self, at: float | None = None) -> None:
        """Read every counter once; a wrapped counter adds its range instead of going back."""
        now = self.clock() if at is None else at
        for device, counter in self.counters.items():
            try:
                raw = counter.read_uj()
            except Exception:
                logger.debug("energy counter %s could not be read", device, exc_info=True)
                continue
            with self._lock:
                times, totals = self._times[device], self._totals[device]
                if times and now <= times[-1]:
                    continue
                last = self._last_raw.get(device)
                if last is None or not totals:
                    total = 0
                else:
                    delta = raw - last
                    if delta < 0:
                        # Wrapped (RAPL); a counter without a known range that goes back was
                        # reset (driver reload): count nothing for that step.
                        delta = delta + counter.wrap_uj if counter.wrap_uj else 0
                    total = totals[-1] + delta
                self._last_raw[device] = raw
                times.append(now)
                totals.append(total)
                cut = bisect.bisect_left(times, now - self.keep_seconds)
                if cut > 64:  # trim in batches
                    del times[:cut], totals[:cut]

    def _at(self, device: str, t: float) -> float | None:
        times, totals = self._times[device], self._totals[device]
        if not times or t < times[0] or t > times[-1]:
            return None
        i = bisect.bisect_left(times, t)
        if times[i] == t:
            return float(totals[i])
        t0, t1 = times[i - 1], times[i]
        e0, e1 = totals[i - 1], totals[i]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    def energy_uj(self, device: str, t0: float, t1: float) -> float | None:
        """Energy the device used between ``t0`` and ``t1``; None unless samples cover both."""
        if device not in self.counters:
            return None
        with self._lock:
            start, end = self._at(device, t0), self._at(device, t1)
        if start is None or end is None:
            return None
        return max(0.0, end - start)

    def devices_for(self, runner_pid: int | None) -> frozenset[str]:
        """The CPU packages, plus the GPUs running the runner process."""
        cpus = {d for d, c in self.counters.items() if c.kind == "cpu"}
        gpus = gpus_of_process(runner_pid, self.nvml) & set(self.counters)
        return frozenset(cpus | gpus)

    def start(self, interval: float = SAMPLE_SECONDS) -> None:
        if self._thread is not None or not self.available:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, name="opsdash-energy-meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@dataclass(frozen=True)
class Span:
    """When a run ran (epoch seconds) and on which devices."""

    start: float
    end: float
    devices: frozenset[str]


def measured_energy_uj(meter: EnergyMeter, span: Span, others: Sequence[Span]) -> float | None:
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


_meter: EnergyMeter | None = None
_meter_lock = threading.Lock()


def get_meter() -> EnergyMeter:
    """This process's meter; the first call discovers the counters and starts sampling."""
    global _meter
    with _meter_lock:
        if _meter is None:
            nvml = _pynvml()
            counters = rapl_counters() + nvml_counters(nvml)
            _meter = EnergyMeter(counters, nvml=nvml)
            _meter.start()
            if counters:
                logger.info("energy meter: %s", ", ".join(c.device for c in counters))
        return _meter


def set_meter(meter: EnergyMeter | None) -> EnergyMeter | None:
    """Replace this process's meter (tests, a host agent); returns the previous one."""
    global _meter
    with _meter_lock:
        previous, _meter = _meter, meter
    return previous
