"""A stand-in for the ``pynvml`` module: the same function names, constants and error classes,
with 0 to 8 pretend GPUs and every failure mode NVML has on a real host. The NVML probe takes it
as its ``nvml`` argument; nothing else in OpsDash is faked.

The health fields (ECC, row remapping, page retirement, clock-event reasons, violation time,
XID events, per-process utilization, thermal thresholds) answer with the shapes nvidia-ml-py
returns: ints, tuples, lists of pids' samples, a ctypes-like struct with ``violationTime`` in
ns. ``unsupported`` names functions that raise NotSupported, as a GPU or driver without that
feature does; ``missing`` names functions an older driver lacks (FunctionNotFound). The default
is an H100: row remapping instead of page retirement, so those two raise NotSupported.

A process that is not a test (a benchmark's agents) gets the same fake through the probe's
``OPSDASH_NVML_MODULE`` variable: ``OPSDASH_NVML_MODULE=tests.telemetry.fake_nvml:eight_gpus``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 1024**3

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_PERF_POLICY_POWER = 0
NVML_PERF_POLICY_THERMAL = 1
nvmlEventTypeXidCriticalError = 0x8  # noqa: N816 (pynvml's name)
# Clock-event (throttle) reason bits, as nvml.h defines them.
nvmlClocksEventReasonGpuIdle = 0x1  # noqa: N816
nvmlClocksEventReasonSwPowerCap = 0x4  # noqa: N816
nvmlClocksEventReasonHwSlowdown = 0x8  # noqa: N816
nvmlClocksEventReasonSwThermalSlowdown = 0x20  # noqa: N816
nvmlClocksEventReasonHwThermalSlowdown = 0x40  # noqa: N816


class NVMLError(Exception):
    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 (pynvml's names)
    message = "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
    message = "Driver Not Loaded"


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    message = "GPU is lost"


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    message = "Not Supported"


class NVMLError_NoPermission(NVMLError):  # noqa: N801
    message = "Insufficient Permissions"


class NVMLError_Timeout(NVMLError):  # noqa: N801
    message = "Timeout"


class NVMLError_NotFound(NVMLError):  # noqa: N801
    message = "Not Found"


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801
    message = "Function Not Found"


@dataclass
class Health:
    """One GPU's error counters and throttling, settable by a test."""

    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (type, counter) → count
    retired: dict[int, int] = field(default_factory=dict)  # cause → pages
    retired_pending: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)  # corr, unc, pending, failure
    reasons: int = 0  # clock-event reason bits
    violation_ns: dict[int, int] = field(default_factory=dict)  # policy → ns since load
    xid_queue: list[int] = field(default_factory=list)


@dataclass
class FakeNvml:
    """``gpus`` devices like an 80 GB H100 (passively cooled: no fan). ``init_error`` makes
    nvmlInit fail; ``lose(i)`` makes every later call on GPU ``i`` fail as a lost GPU."""

    gpus: int = 1
    init_error: type[NVMLError] | None = None
    utilization: int = 87
    temperature: int = 64
    memory_used: int = 30 * GIB
    processes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # gpu → (pid, bytes)
    energy_mj: int = 123_456_789_012  # every GPU's total-energy counter
    lost: set[int] = field(default_factory=set)
    slowdown_c: int = 89  # an H100 SXM's slowdown and shutdown thresholds
    shutdown_c: int = 92
    unsupported: set[str] = field(
        default_factory=lambda: {
            "nvmlDeviceGetRetiredPages",
            "nvmlDeviceGetRetiredPagesPendingStatus",
        }
    )
    missing: set[str] = field(default_factory=set)
    # gpu → (pid, sm %, mem %) samples nvmlDeviceGetProcessUtilization answers
    process_util: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    # how "no sample since then" is answered: NOT_FOUND, or (some drivers) SUCCESS on the sizing
    # call, which nvidia-ml-py raises as NVMLError(NVML_SUCCESS)
    no_samples_as_success: bool = False
    health: dict[int, Health] = field(default_factory=dict)
    event_sets: int = 0
    event_sets_freed: int = 0
    inits: int = 0
    shutdowns: int = 0
    pcie_reads: int = 0

    # the module's constants and error classes, as attributes
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_PCIE_UTIL_TX_BYTES = NVML_PCIE_UTIL_TX_BYTES
    NVML_PCIE_UTIL_RX_BYTES = NVML_PCIE_UTIL_RX_BYTES
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    NVML_MEMORY_ERROR_TYPE_CORRECTED = NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = NVML_AGGREGATE_ECC
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = (
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
    )
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = (
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    )
    NVML_PERF_POLICY_POWER = NVML_PERF_POLICY_POWER
    NVML_PERF_POLICY_THERMAL = NVML_PERF_POLICY_THERMAL
    nvmlEventTypeXidCriticalError = nvmlEventTypeXidCriticalError
    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound

    def lose(self, index: int) -> None:
        self.lost.add(index)

    def gpu(self, index: int) -> Health:
        """GPU ``index``'s counters and throttling, to set."""
        return self.health.setdefault(index, Health())

    def fire_xid(self, index: int, xid: int) -> None:
        """The driver reports XID ``xid`` on GPU ``index`` (it waits in the event set)."""
        self.gpu(index).xid_queue.append(xid)

    def _check(self, handle: int, function: str = "") -> None:
        if handle in self.lost:
            raise NVMLError_GpuIsLost()
        if function in self.missing:
            raise NVMLError_FunctionNotFound()
        if function in self.unsupported:
            raise NVMLError_NotSupported()

    def nvmlInit(self) -> None:  # noqa: N802
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error()

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if index >= self.gpus:
            raise NVMLError()
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        self._check(handle, "nvmlDeviceGetName")
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        self._check(handle, "nvmlDeviceGetUUID")
        return f"GPU-{handle:08x}-1a2b-3c4d-5e6f-7a8b9c0d1e2f"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._check(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self.utilization, memory=41)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._check(handle, "nvmlDeviceGetMemoryInfo")
        total = 80 * GIB
        return SimpleNamespace(total=total, used=self.memory_used, free=total - self.memory_used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetTemperature")
        return self.temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetPowerUsage")
        return 612_345  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetEnforcedPowerLimit")
        return 700_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetTotalEnergyConsumption")
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle: int, kind: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetClockInfo")
        return 1980 if kind == NVML_CLOCK_SM else 2619

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetFanSpeed")
        raise NVMLError_NotSupported()  # passively cooled, as data-centre boards are

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetPcieThroughput")
        self.pcie_reads += 1
        return 1_500_000 if counter == NVML_PCIE_UTIL_RX_BYTES else 250_000  # KB/s

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:  # noqa: N802
        self._check(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self.processes.get(handle, [])
        ]

    # --- health: thermal thresholds, throttling, memory errors, XID, per-process use -----------

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetTemperatureThreshold")
        if threshold == NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            return self.slowdown_c
        if threshold == NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
            return self.shutdown_c
        raise NVMLError_NotSupported()

    def nvmlDeviceGetMarginTemperature(self, handle: int) -> int:  # noqa: N802
        # Newer drivers (R550 on) answer the margin themselves; older ones lack the function.
        self._check(handle, "nvmlDeviceGetMarginTemperature")
        return self.slowdown_c - self.temperature

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        return self.gpu(handle).reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return self.gpu(handle).reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetTotalEccErrors")
        return self.gpu(handle).ecc.get((error_type, counter), 0)

    def nvmlDeviceGetRetiredPages(self, handle: int, cause: int) -> list[int]:  # noqa: N802
        self._check(handle, "nvmlDeviceGetRetiredPages")
        return [0x1000 * (i + 1) for i in range(self.gpu(handle).retired.get(cause, 0))]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:  # noqa: N802
        self._check(handle, "nvmlDeviceGetRetiredPagesPendingStatus")
        return self.gpu(handle).retired_pending

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:  # noqa: N802
        self._check(handle, "nvmlDeviceGetRemappedRows")
        return self.gpu(handle).remapped

    def nvmlDeviceGetViolationStatus(self, handle: int, policy: int) -> SimpleNamespace:  # noqa: N802
        self._check(handle, "nvmlDeviceGetViolationStatus")
        # referenceTime in µs (CPU clock), violationTime in ns, as c_nvmlViolationTime_t
        return SimpleNamespace(
            referenceTime=1_700_000_000_000_000,
            violationTime=self.gpu(handle).violation_ns.get(policy, 0),
        )

    def nvmlEventSetCreate(self) -> list[int]:  # noqa: N802
        self.event_sets += 1
        return []  # the set: the handles registered in it

    def nvmlDeviceRegisterEvents(self, handle: int, types: int, event_set: list[int]) -> None:  # noqa: N802
        self._check(handle, "nvmlDeviceRegisterEvents")
        if types & nvmlEventTypeXidCriticalError:
            event_set.append(handle)

    def nvmlEventSetWait(self, event_set: list[int], timeout_ms: int) -> SimpleNamespace:  # noqa: N802
        if "nvmlEventSetWait" in self.missing:
            raise NVMLError_FunctionNotFound()
        for handle in event_set:
            self._check(handle)
            queue = self.gpu(handle).xid_queue
            if queue:
                return SimpleNamespace(
                    device=handle,
                    eventType=nvmlEventTypeXidCriticalError,
                    eventData=queue.pop(0),
                    gpuInstanceId=0xFFFFFFFF,
                    computeInstanceId=0xFFFFFFFF,
                )
        raise NVMLError_Timeout()  # what a 0 ms wait answers when nothing happened

    def nvmlEventSetFree(self, event_set: list[int]) -> None:  # noqa: N802
        self.event_sets_freed += 1

    def nvmlDeviceGetProcessUtilization(  # noqa: N802
        self, handle: int, since_us: int
    ) -> list[SimpleNamespace]:
        self._check(handle, "nvmlDeviceGetProcessUtilization")
        samples = self.process_util.get(handle, [])
        if not samples and self.no_samples_as_success:
            error = NVMLError()
            error.value = 0  # type: ignore[attr-defined]
            error.message = "Success"
            raise error
        if not samples:
            raise NVMLError_NotFound()  # what the driver answers when no process ran since then
        return [
            SimpleNamespace(
                pid=pid,
                timeStamp=since_us + 1_000_000,
                smUtil=sm,
                memUtil=mem,
                encUtil=0,
                decUtil=0,
            )
            for pid, sm, mem in samples
        ]


def eight_gpus() -> FakeNvml:
    """An 8-GPU H100 node, every GPU busy with one runner, for benchmarks: what
    ``OPSDASH_NVML_MODULE=tests.telemetry.fake_nvml:eight_gpus`` gives an agent."""
    return FakeNvml(
        gpus=8,
        memory_used=70 * GIB,
        processes={i: [(1000 + i, 68 * GIB)] for i in range(8)},
        process_util={i: [(1000 + i, 87, 41)] for i in range(8)},
    )
