"""What the probes read, as typed dictionaries in base units (see ``frames`` for the units).

Framework-free, like the rest of ``probes``: the frame (``opsdash.telemetry.frames``) is built
from these and re-exports them.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

GpuState = str
"""``ok``, ``no_library``, ``no_driver``, ``no_devices`` or ``error: <message>``."""

GPU_OK: GpuState = "ok"
NO_LIBRARY: GpuState = "no_library"
NO_DRIVER: GpuState = "no_driver"
NO_DEVICES: GpuState = "no_devices"


class CpuFigures(TypedDict):
    percent: list[int]  # per core, 0–100
    total: float  # all cores, 0–100
    freq_mhz: int | None
    load: list[float]  # 1, 5, 15 minutes
    count: int


class MemoryFigures(TypedDict):
    total_bytes: int
    used_bytes: int
    available_bytes: int
    cached_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int


class DiskFigures(TypedDict):
    read_bytes_s: int
    write_bytes_s: int
    read_bytes_total: int
    write_bytes_total: int
    models_free_bytes: int | None  # free space where models are installed
    models_total_bytes: int | None
    devices: NotRequired[dict[str, list[int]]]  # name → [read_bytes_s, write_bytes_s]


class NetFigures(TypedDict):
    rx_bytes_s: int
    tx_bytes_s: int
    rx_bytes_total: int
    tx_bytes_total: int
    interfaces: NotRequired[dict[str, list[int]]]  # name → [rx_bytes_s, tx_bytes_s]


class GpuFigures(TypedDict):
    index: int
    name: str
    util: int | None  # percent
    mem_util: int | None  # percent of time the memory controller was busy
    mem_used: int | None  # bytes
    mem_total: int | None  # bytes
    temp: int | None  # °C
    power: float | None  # W
    power_limit: float | None  # W
    sm_clock: int | None  # MHz
    mem_clock: int | None  # MHz
    fan: int | None  # percent; None on passively cooled boards
    energy: int | None  # J since the driver loaded; None where unsupported
    pcie_rx: int | None  # bytes per second
    pcie_tx: int | None
    # Health (probes/gpu_health.py says each one's shape); NotRequired because a frame from an
    # agent of an older version lacks them: readers use .get().
    margin: NotRequired[int | None]  # °C before the GPU slows itself down
    slowdown: NotRequired[int | None]  # °C, the slowdown threshold
    throttle: NotRequired[dict[str, int] | None]  # active reason → seconds active
    ecc: NotRequired[list[int | None] | None]  # vol corr, vol uncorr, agg corr, agg uncorr
    retired: NotRequired[list[int | None] | None]  # single-bit, double-bit pages, pending
    remap: NotRequired[list[int] | None]  # correctable, uncorrectable rows, pending, failure
    viol: NotRequired[list[float | None] | None]  # power, thermal: seconds held down
    xid: NotRequired[list[list[int]] | None]  # [xid, epoch ms] of the last 10 minutes
    xid_total: NotRequired[int | None]  # XID events this process has seen
    procs: NotRequired[list[list[int | None]] | None]  # pid, used bytes, sm %, mem %


class ProcessFigures(TypedDict):
    pid: int
    cpu_percent: float  # of one core, so a busy 8-thread runner may show 800
    rss_bytes: int
    threads: int
