"""Host figures through psutil: CPU, memory, disk and network every tick, free space and clock
frequency on slow ticks, and the process table of the runners and of OpsDash itself.

Rates (bytes per second) are deltas of the kernel's counters over the time between two reads,
so the first read after start reports 0. Whole disks only (``/sys/block/*/device``) and physical
network interfaces when there are any, so LVM volumes, partitions, loop devices, bridges and
veth pairs do not count the same bytes twice.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from opsdash.telemetry.probes.figures import (
    CpuFigures,
    DiskFigures,
    MemoryFigures,
    NetFigures,
    ProcessFigures,
)

# At most this many disks and interfaces are itemised in a frame (the busiest); totals count all.
MAX_ITEMISED = 4
DEVICE_LIST_SECONDS = 60.0


class HostReading(NamedTuple):
    cpu: CpuFigures
    memory: MemoryFigures
    disk: DiskFigures
    net: NetFigures


@dataclass
class _Counters:
    at: float
    values: dict[str, tuple[int, int]]


class HostProbe:
    """``read(slow=...)``: the host's figures now. ``ps`` is the psutil module (tests pass a
    stand-in to pretend to have 64 cores); ``models_dir`` is where free space is measured."""

    def __init__(self, *, models_dir: Path, ps: Any = psutil, sys_root: str = "/sys") -> None:
        self._ps = ps
        self._models_dir = models_dir
        self._sys = sys_root
        self._disk_prev: _Counters | None = None
        self._net_prev: _Counters | None = None
        self._disk_names: tuple[float, set[str] | None] = (0.0, None)
        self._nic_names: tuple[float, set[str] | None] = (0.0, None)
        self._slow: dict[str, Any] = {"freq_mhz": None, "free": None, "total": None, "swap": None}
        ps.cpu_percent(percpu=True)  # the first call only sets the baseline

    def read(self, *, slow: bool) -> HostReading:
        if slow:
            self._read_slow()
        now = time.monotonic()
        return HostReading(self._cpu(), self._memory(), self._disk(now), self._net(now))

    def _read_slow(self) -> None:
        # Swap moves slowly and reading it costs as much as all the memory figures together.
        self._slow["swap"] = self._ps.swap_memory()
        try:
            freq = self._ps.cpu_freq()
            self._slow["freq_mhz"] = round(freq.current) if freq and freq.current else None
        except (OSError, NotImplementedError, AttributeError):
            self._slow["freq_mhz"] = None
        try:
            usage = shutil.disk_usage(self._models_dir)
            self._slow["free"], self._slow["total"] = usage.free, usage.total
        except OSError:
            self._slow["free"] = self._slow["total"] = None

    def _cpu(self) -> CpuFigures:
        per_core = self._ps.cpu_percent(percpu=True)
        try:
            load = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            load = [0.0, 0.0, 0.0]
        return {
            "percent": [round(v) for v in per_core],
            "total": round(sum(per_core) / len(per_core), 1) if per_core else 0.0,
            "freq_mhz": self._slow["freq_mhz"],
            "load": load,
            "count": len(per_core),
        }

    def _memory(self) -> MemoryFigures:
        vm = self._ps.virtual_memory()
        swap = self._slow["swap"] or self._ps.swap_memory()
        return {
            "total_bytes": vm.total,
            # What is really taken: the kernel can reclaim caches, so "used" is total − available
            # (the same figure as psutil's percent, `free`'s and Glances').
            "used_bytes": vm.total - vm.available,
            "available_bytes": vm.available,
            "cached_bytes": getattr(vm, "cached", 0) + getattr(vm, "buffers", 0),
            "swap_total_bytes": swap.total,
            "swap_used_bytes": swap.used,
        }

    def _disk(self, now: float) -> DiskFigures:
        # nowrap=False: rates come from deltas, and a counter that wraps only clamps one to 0.
        counters = self._ps.disk_io_counters(perdisk=True, nowrap=False) or {}
        wanted = self._whole_disks(counters.keys())
        values = {
            name: (c.read_bytes, c.write_bytes)
            for name, c in counters.items()
            if wanted is None or name in wanted
        }
        rates, totals = _rates(self._disk_prev, values, now)
        self._disk_prev = _Counters(now, values)
        figures: DiskFigures = {
            "read_bytes_s": sum(r for r, _ in rates.values()),
            "write_bytes_s": sum(w for _, w in rates.values()),
            "read_bytes_total": totals[0],
            "write_bytes_total": totals[1],
            "models_free_bytes": self._slow["free"],
            "models_total_bytes": self._slow["total"],
        }
        if rates:
            figures["devices"] = _busiest(rates)
        return figures

    def _net(self, now: float) -> NetFigures:
        counters = self._ps.net_io_counters(pernic=True, nowrap=False) or {}
        wanted = self._physical_nics(counters.keys())
        values = {
            name: (c.bytes_recv, c.bytes_sent)
            for name, c in counters.items()
            if (name in wanted if wanted else name != "lo")
        }
        rates, totals = _rates(self._net_prev, values, now)
        self._net_prev = _Counters(now, values)
        figures: NetFigures = {
            "rx_bytes_s": sum(r for r, _ in rates.values()),
            "tx_bytes_s": sum(t for _, t in rates.values()),
            "rx_bytes_total": totals[0],
            "tx_bytes_total": totals[1],
        }
        if rates:
            figures["interfaces"] = _busiest(rates)
        return figures

    def _whole_disks(self, names: Iterable[str]) -> set[str] | None:
        """Disks with a device behind them; None (take all) where /sys/block is not there."""
        at, cached = self._disk_names
        if cached is not None and time.monotonic() - at < DEVICE_LIST_SECONDS:
            return cached
        block = Path(self._sys, "block")
        found = {n for n in names if (block / n / "device").exists()} if block.is_dir() else None
        self._disk_names = (time.monotonic(), found)
        return found

    def _physical_nics(self, names: Iterable[str]) -> set[str]:
        at, cached = self._nic_names
        if cached is not None and time.monotonic() - at < DEVICE_LIST_SECONDS:
            return cached
        net = Path(self._sys, "class", "net")
        found = {n for n in names if (net / n / "device").exists()}
        self._nic_names = (time.monotonic(), found)
        return found


def _rates(
    previous: _Counters | None, values: dict[str, tuple[int, int]], now: float
) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    totals = (sum(a for a, _ in values.values()), sum(b for _, b in values.values()))
    if previous is None or now <= previous.at:
        return dict.fromkeys(values, (0, 0)), totals
    elapsed = now - previous.at
    rates = {}
    for name, (a, b) in values.items():
        pa, pb = previous.values.get(name, (a, b))
        rates[name] = (max(0, round((a - pa) / elapsed)), max(0, round((b - pb) / elapsed)))
    return rates, totals


def _busiest(rates: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    ranked = sorted(rates.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
    return {name: [a, b] for name, (a, b) in ranked[:MAX_ITEMISED]}


class ProcessTable:
    """CPU %, RSS and threads of given pids. psutil needs the same ``Process`` object between
    two reads to compute CPU %, so they are kept while the pid lives."""

    def __init__(self, ps: Any = psutil) -> None:
        self._ps = ps
        self._processes: dict[int, Any] = {}
        self.cpu_seconds: dict[int, float] = {}  # pid → user + system CPU time, at the last read

    def read(self, pids: Iterable[int]) -> dict[int, ProcessFigures]:
        wanted = set(pids)
        for pid in list(self._processes):
            if pid not in wanted:
                del self._processes[pid]
        out: dict[int, ProcessFigures] = {}
        cpu_seconds: dict[int, float] = {}
        for pid in wanted:
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = self._ps.Process(pid)
                with process.oneshot():
                    out[pid] = {
                        "pid": pid,
                        "cpu_percent": round(process.cpu_percent(interval=None), 1),
                        "rss_bytes": process.memory_info().rss,
                        "threads": process.num_threads(),
                    }
                    times = process.cpu_times()
                    cpu_seconds[pid] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._processes.pop(pid, None)
        self.cpu_seconds = cpu_seconds
        return out
