"""The GPU health figures operators know from DCGM and nvitop, read through the NVML session of
``probes.nvml`` (which owns the session and is still the one module importing ``pynvml``; this
one is handed the module).

Per GPU, into its frame entry (short keys, as the rest of a GPU's; ``None`` wherever this GPU or
driver does not answer, never an exception and never a GPU dropped):

- ``margin``: °C left before the GPU slows itself down (the driver's own margin where it has
  ``nvmlDeviceGetMarginTemperature``, else slowdown threshold − temperature); ``slowdown``: that
  threshold in °C. Read every tick, with ``throttle``.
- ``throttle``: the clock-event ("throttle") reasons active now, name → whole seconds they have
  been active without a break (``{}`` when the clocks run free).
- ``ecc``: ``[volatile corrected, volatile uncorrected, aggregate corrected, aggregate
  uncorrected]`` (volatile: since the driver loaded; aggregate: the board's lifetime).
- ``retired``: ``[single-bit pages, double-bit pages, pending 0|1]`` (page retirement, up to
  Volta/Turing); ``remap``: ``[correctable rows, uncorrectable rows, pending 0|1, failure 0|1]``
  (row remapping, Ampere on). Each GPU has one or the other: the other is ``None``.
- ``viol``: ``[power s, thermal s]``: time the clocks were held down by the power or thermal
  policy since the driver loaded (a counter).
- ``xid``: ``[[xid, epoch ms], ...]`` critical XID events of the last ``XID_RECENT_SECONDS``
  (at most ``XID_KEPT``), each read once from the driver's event queue; ``xid_total``: how many
  this process has seen.
- ``procs``: ``[[pid, used bytes, sm %, mem %], ...]`` per compute process, the biggest first.

Everything but ``margin`` and ``throttle`` is read on the slow (5 s) tick. Positional lists keep
eight GPUs within the frame's budget; ``/metrics`` exports the same figures under descriptive
DCGM-like names.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

logger = logging.getLogger(__name__)

XID_RECENT_SECONDS = 600
XID_KEPT = 8
PROCESSES_KEPT = 8
XID_EVENTS_PER_READ = 32  # a storm of events is read over several ticks, not all at once

# nvml.h's clock-event reason bits: stable ABI, so a driver's answer reads the same whichever
# nvidia-ml-py names them (ThrottleReason before 12.535, EventReason after).
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal"),
    (0x40, "hw_thermal"),
    (0x80, "hw_power_brake"),
    (0x100, "display_clocks"),
)
THERMAL_REASONS = frozenset({"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"})
POWER_REASONS = frozenset({"sw_power_cap"})
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError

# One NVML call through the probe: ``field(name, call)`` answers None for an unsupported field
# (and remembers that), raises for a broken session.
FieldCall = Callable[[str, Callable[[], Any]], Any]


def reason_names(bits: int) -> list[str]:
    """The names of the reason bits set; a bit nvml.h did not define when this was written is
    named by its value, so it still shows."""
    names = [name for bit, name in THROTTLE_REASONS if bits & bit]
    known = 0
    for bit, _ in THROTTLE_REASONS:
        known |= bit
    rest = bits & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"0x{bit:x}")
            rest &= ~bit
        bit <<= 1
    return names


@dataclass
class DeviceHealth:
    """What one GPU's health reading keeps between ticks."""

    throttle_since: dict[str, float] = field(default_factory=dict)  # reason → monotonic start
    xid: deque[list[int]] = field(default_factory=lambda: deque(maxlen=XID_KEPT))
    xid_total: int = 0
    event_set: Any = None
    process_since_us: int = 0  # the newest per-process utilization sample seen
    slow: dict[str, Any] = field(default_factory=dict)


def read_fast(
    nvml: Any, handle: Any, health: DeviceHealth, call: FieldCall, temp: int | None
) -> dict[str, Any]:
    """``margin``, ``slowdown`` (kept from the slow read) and ``throttle``, every tick."""
    margin = None
    if hasattr(nvml, "nvmlDeviceGetMarginTemperature"):  # nvidia-ml-py 12.550 on
        margin = call("margin", lambda: nvml.nvmlDeviceGetMarginTemperature(handle))
    slowdown = health.slow.get("slowdown")
    if margin is None and slowdown is not None and temp is not None:
        margin = slowdown - temp
    bits = _throttle_bits(nvml, handle, call)
    now = time.monotonic()
    throttle: dict[str, int] | None = None
    if bits is not None:
        active = reason_names(int(bits))
        since = health.throttle_since
        for name in list(since):
            if name not in active:
                del since[name]
        throttle = {}
        for name in active:
            throttle[name] = int(now - since.setdefault(name, now))
    return {
        "margin": int(margin) if margin is not None else None,
        "slowdown": slowdown,
        "throttle": throttle,
    }


def _throttle_bits(nvml: Any, handle: Any, call: FieldCall) -> Any:
    # nvidia-ml-py renamed the call (EventReasons); a driver before R535 has only the old one.
    if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons"):
        bits = call("throttle", lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
        if bits is not None:
            return bits
    return call("throttle_old", lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


def read_slow(nvml: Any, handle: Any, health: DeviceHealth, call: FieldCall) -> None:
    """Refresh the slow health figures into ``health.slow``; drain the XID events."""
    slow = health.slow
    if slow.get("slowdown") is None:
        slow["slowdown"] = call(
            "slowdown",
            lambda: nvml.nvmlDeviceGetTemperatureThreshold(
                handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            ),
        )
    ecc = [
        call(
            f"ecc_{kind}_{counter}",
            partial(nvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter),
        )
        for counter in (nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC)
        for kind in (nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
    ]
    slow["ecc"] = None if all(v is None for v in ecc) else [_int(v) for v in ecc]

    pages = [
        call(f"retired_{cause}", partial(nvml.nvmlDeviceGetRetiredPages, handle, cause))
        for cause in (
            nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
            nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
    ]
    pending = call("retired_pending", lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    retired = [None if p is None else len(p) for p in pages] + [_flag(pending)]
    slow["retired"] = None if all(v is None for v in retired) else retired

    rows = call("remap", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
    slow["remap"] = (
        None if rows is None else [int(rows[0]), int(rows[1]), _flag(rows[2]), _flag(rows[3])]
    )

    viol = [
        call(f"viol_{policy}", partial(nvml.nvmlDeviceGetViolationStatus, handle, policy))
        for policy in (nvml.NVML_PERF_POLICY_POWER, nvml.NVML_PERF_POLICY_THERMAL)
    ]
    seconds = [None if v is None else round(int(v.violationTime) / 1e9, 1) for v in viol]
    slow["viol"] = None if all(v is None for v in seconds) else seconds

    _drain_xid(nvml, health)


def processes(
    nvml: Any, handle: Any, health: DeviceHealth, call: FieldCall, compute: list[Any] | None
) -> list[list[Any]] | None:
    """``procs`` for this GPU from the compute-process list (memory) and the per-process
    utilization samples since the last read (sm %, mem %)."""
    util: dict[int, tuple[int, int]] = {}
    samples = call("process_util", lambda: _process_samples(nvml, handle, health))
    for sample in samples or ():
        util[int(sample.pid)] = (_percent(sample.smUtil), _percent(sample.memUtil))
        health.process_since_us = max(health.process_since_us, int(sample.timeStamp))
    if compute is None and samples is None:
        return None
    rows: dict[int, list[Any]] = {}
    for process in compute or ():
        used = getattr(process, "usedGpuMemory", None)
        rows[int(process.pid)] = [int(process.pid), None if used is None else int(used), None, None]
    for pid, (sm, mem) in util.items():
        row = rows.setdefault(pid, [pid, None, None, None])
        row[2], row[3] = sm, mem
    if samples is not None:
        for row in rows.values():  # no sample since the last read: the process was idle
            if row[2] is None:
                row[2], row[3] = 0, 0
    ordered = sorted(rows.values(), key=lambda r: (-(r[1] or 0), r[0]))
    return ordered[:PROCESSES_KEPT]


def _process_samples(nvml: Any, handle: Any, health: DeviceHealth) -> list[Any]:
    try:
        return list(nvml.nvmlDeviceGetProcessUtilization(handle, health.process_since_us))
    except Exception as exc:
        # NOT_FOUND is the driver's "no samples since that time stamp": nothing ran, not a fault.
        # Some drivers answer the sizing call with SUCCESS and no samples instead, which
        # nvidia-ml-py raises as an NVMLError whose value is 0 (NVML_SUCCESS).
        not_found = getattr(nvml, "NVMLError_NotFound", None)
        if isinstance(not_found, type) and isinstance(exc, not_found):
            return []
        if getattr(exc, "value", None) == 0:
            return []
        raise


def figures(health: DeviceHealth, now_ms: int) -> dict[str, Any]:
    """The slow health figures as the frame carries them."""
    slow = health.slow
    cutoff = now_ms - XID_RECENT_SECONDS * 1000
    while health.xid and health.xid[0][1] <= cutoff:
        health.xid.popleft()
    return {
        "ecc": slow.get("ecc"),
        "retired": slow.get("retired"),
        "remap": slow.get("remap"),
        "viol": slow.get("viol"),
        "xid": [list(x) for x in health.xid] if health.event_set is not None else None,
        "xid_total": health.xid_total if health.event_set is not None else None,
        "procs": slow.get("procs"),
    }


# --- XID events -------------------------------------------------------------------------------


def open_events(nvml: Any, handle: Any, health: DeviceHealth, index: int) -> None:
    """One event set per GPU registered for critical XIDs, so an event names its GPU without
    comparing device handles. A GPU or container that cannot register leaves ``xid`` None."""
    try:
        event_set = nvml.nvmlEventSetCreate()
    except Exception as exc:
        logger.info("GPU %s: no XID events (%s)", index, exc)
        return
    try:
        kind = getattr(nvml, "nvmlEventTypeXidCriticalError", XID_EVENT)
        nvml.nvmlDeviceRegisterEvents(handle, kind, event_set)
    except Exception as exc:
        logger.info("GPU %s: no XID events (%s)", index, exc)
        _free(nvml, event_set)
        return
    health.event_set = event_set


def close_events(nvml: Any, health: DeviceHealth) -> None:
    if health.event_set is not None:
        _free(nvml, health.event_set)
        health.event_set = None


def _drain_xid(nvml: Any, health: DeviceHealth) -> None:
    if health.event_set is None:
        return
    timeout = getattr(nvml, "NVMLError_Timeout", None)
    for _ in range(XID_EVENTS_PER_READ):
        try:
            event = nvml.nvmlEventSetWait(health.event_set, 0)  # 0 ms: never blocks the tick
        except Exception as exc:
            if isinstance(timeout, type) and isinstance(exc, timeout):
                return  # nothing waiting
            lost = getattr(nvml, "NVMLError_GpuIsLost", None)
            if isinstance(lost, type) and isinstance(exc, lost):
                raise
            logger.warning("XID events stopped: %s", exc)
            close_events(nvml, health)
            return
        if int(event.eventType) & XID_EVENT:
            health.xid.append([int(event.eventData), int(time.time() * 1000)])
            health.xid_total += 1


def _free(nvml: Any, event_set: Any) -> None:
    try:
        nvml.nvmlEventSetFree(event_set)
    except Exception as exc:  # a session already gone frees its sets with it
        logger.debug("nvmlEventSetFree: %s", exc)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _flag(value: Any) -> int | None:
    return None if value is None else (1 if int(value) else 0)


def _percent(value: Any) -> int:
    # Some drivers report a sample's utilization above 100 for a process that just exited.
    return max(0, min(100, int(value)))
