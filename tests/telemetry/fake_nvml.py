"""A stand-in for the ``pynvml`` module: the same function names, constants and error classes,
with 0 to 8 pretend GPUs and every failure mode NVML has on a real host. The NVML probe takes it
as its ``nvml`` argument; nothing else in OpsDash is faked.
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
    inits: int = 0
    shutdowns: int = 0
    pcie_reads: int = 0

    # the module's constants and error classes, as attributes
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_PCIE_UTIL_TX_BYTES = NVML_PCIE_UTIL_TX_BYTES
    NVML_PCIE_UTIL_RX_BYTES = NVML_PCIE_UTIL_RX_BYTES
    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission

    def lose(self, index: int) -> None:
        self.lost.add(index)

    def _check(self, handle: int) -> None:
        if handle in self.lost:
            raise NVMLError_GpuIsLost()

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
        self._check(handle)
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        self._check(handle)
        return f"GPU-{handle:08x}-1a2b-3c4d-5e6f-7a8b9c0d1e2f"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._check(handle)
        return SimpleNamespace(gpu=self.utilization, memory=41)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._check(handle)
        total = 80 * GIB
        return SimpleNamespace(total=total, used=self.memory_used, free=total - self.memory_used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        self._check(handle)
        return self.temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        self._check(handle)
        return 612_345  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:  # noqa: N802
        self._check(handle)
        return 700_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        self._check(handle)
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle: int, kind: int) -> int:  # noqa: N802
        self._check(handle)
        return 1980 if kind == NVML_CLOCK_SM else 2619

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:  # noqa: N802
        self._check(handle)
        raise NVMLError_NotSupported()  # passively cooled, as data-centre boards are

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:  # noqa: N802
        self._check(handle)
        self.pcie_reads += 1
        return 1_500_000 if counter == NVML_PCIE_UTIL_RX_BYTES else 250_000  # KB/s

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:  # noqa: N802
        self._check(handle)
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self.processes.get(handle, [])
        ]
