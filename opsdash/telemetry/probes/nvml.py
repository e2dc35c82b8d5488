"""GPU figures through NVML (nvidia-ml-py), one session per process: the one module of OpsDash
that imports ``pynvml`` (tests/telemetry/test_probes.py checks that no other does).

The probe takes the ``pynvml`` module as an argument (``nvml=``); by default it imports the real
one, inside ``open()``, never at import time. Tests hand it a fake module with the same
functions and error classes: that boundary is the only fake in the test suite.

Trouble never raises out of ``read()``: it becomes a named state with a sentence saying why
(``no_library``, ``no_driver``, ``no_devices``, ``error: <message>``), the GPU list is empty, and
the rest of the frame carries on. A failed session is retried every ``retry_seconds``, so a
driver loaded after start-up, or a GPU back from a reset, shows up without a restart.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from opsdash.telemetry.probes import gpu_health
from opsdash.telemetry.probes.figures import (
    GPU_OK,
    NO_DEVICES,
    NO_DRIVER,
    NO_LIBRARY,
    GpuFigures,
    GpuState,
)

logger = logging.getLogger(__name__)

# PCIe throughput makes the driver sample for ~20 ms per direction, so it is read for this many
# GPUs per slow tick, in turn, rather than for all of them at once.
PCIE_GPUS_PER_SLOW_TICK = 2

SENTENCES = {
    "package": "The nvidia-ml-py package is not installed, so OpsDash cannot ask for GPU figures.",
    NO_LIBRARY: (
        "No NVIDIA driver is installed on this host: the driver's NVML library "
        "(libnvidia-ml.so.1) was not found."
    ),
    NO_DRIVER: (
        "The NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded); check that the "
        "nvidia kernel module is loaded (nvidia-smi says the same)."
    ),
    NO_DEVICES: "The NVIDIA driver is loaded but reports no GPUs.",
}


@dataclass
class GpuReading:
    state: GpuState
    detail: str
    gpus: list[GpuFigures] = field(default_factory=list)
    process_memory: dict[int, int] = field(default_factory=dict)  # pid → GPU bytes, all GPUs
    process_gpus: dict[int, set[int]] = field(default_factory=dict)  # pid → GPU indexes
    energy_mj: dict[int, int] = field(default_factory=dict)  # GPU index → mJ since driver load


@dataclass
class _Device:
    index: int
    handle: Any
    name: str
    uuid: str
    slow: dict[str, Any] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)
    health: gpu_health.DeviceHealth = field(default_factory=gpu_health.DeviceHealth)


class NvmlProbe:
    """Reads every GPU; ``read(slow=True)`` also refreshes clocks, fan, power limit, PCIe and the
    per-process memory table (every 5 s by the sampler; the rest is read every tick)."""

    def __init__(self, nvml: Any = None, *, retry_seconds: float = 60.0) -> None:
        self._module = nvml
        self._retry_seconds = retry_seconds
        self._nvml: Any = None
        self._devices: list[_Device] = []
        self._state: GpuState | None = None
        self._detail = ""
        self._retry_at = 0.0
        # What was last logged: every retry (each ``retry_seconds``) starts from a closed session,
        # so the state alone cannot tell a repeat from news.
        self._logged: tuple[GpuState, str] | None = None
        self._pcie_next = 0
        self._process_memory: dict[int, int] = {}
        self._process_gpus: dict[int, set[int]] = {}
        self._energy_mj: list[int | None] = []  # this read's, in device order
        # The sampler's thread reads every tick; pricing may ask for the energy counters now
        # from another thread (``read_energy``): one call into the session at a time.
        self._lock = threading.RLock()

    @property
    def state(self) -> GpuState | None:
        return self._state

    # --- the session --------------------------------------------------------------------------

    def open(self) -> GpuState:
        """Start the NVML session and list the GPUs; returns the state."""
        self.close()
        self._retry_at = time.monotonic() + self._retry_seconds
        nvml = self._module
        if nvml is None:
            try:
                nvml = _import_nvml()
            except ImportError:
                return self._fail(NO_LIBRARY, SENTENCES["package"])
            except Exception as exc:  # a malformed OPSDASH_NVML_MODULE
                return self._fail(
                    f"error: {_message(exc)}",
                    f"{NVML_MODULE_VARIABLE} names no usable NVML module: {_message(exc)}.",
                )
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if _is(nvml, exc, "NVMLError_LibraryNotFound"):
                return self._fail(NO_LIBRARY, SENTENCES[NO_LIBRARY])
            if _is(nvml, exc, "NVMLError_DriverNotLoaded"):
                return self._fail(NO_DRIVER, SENTENCES[NO_DRIVER])
            return self._fail(f"error: {_message(exc)}", _error_sentence(exc))
        try:
            count = nvml.nvmlDeviceGetCount()
            devices = []
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(nvml.nvmlDeviceGetName(handle))
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                devices.append(_Device(index, handle, name, uuid))
        except Exception as exc:
            self._shutdown()
            return self._fail(f"error: {_message(exc)}", _error_sentence(exc))
        if not devices:
            self._shutdown()
            return self._fail(NO_DEVICES, SENTENCES[NO_DEVICES])
        for device in devices:
            gpu_health.open_events(nvml, device.handle, device.health, device.index)
        self._devices = devices
        self._state, self._detail = GPU_OK, ""
        self._logged = None  # trouble after this is news again
        logger.info("NVML: %s", ", ".join(f"{d.index}: {d.name} ({d.uuid})" for d in devices))
        return GPU_OK

    def close(self) -> None:
        if self._state == GPU_OK:
            for device in self._devices:
                gpu_health.close_events(self._nvml, device.health)
            self._shutdown()
        self._devices = []
        self._state = None

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # a lost GPU may refuse this too; the session is gone anyway
            logger.debug("nvmlShutdown: %s", exc)

    def _fail(self, state: GpuState, detail: str) -> GpuState:
        # Said once at INFO (WARNING for an error); the same answer on each retry only at DEBUG,
        # so a host without a GPU does not log a line a minute for ever.
        if (state, detail) != self._logged:
            level = logging.WARNING if state.startswith("error") else logging.INFO
            self._logged = (state, detail)
        else:
            level = logging.DEBUG
        logger.log(level, "NVML unavailable (%s): %s", state, detail)
        self._state, self._detail = state, detail
        self._devices = []
        self._process_memory = {}
        self._process_gpus = {}
        return state

    # --- reading ------------------------------------------------------------------------------

    def read(self, *, slow: bool) -> GpuReading:
        """Every GPU's figures now, or the state that explains why there are none."""
        with self._lock:
            return self._read(slow=slow)

    def read_energy(self) -> dict[int, int]:
        """GPU index → total energy in mJ now, for the GPUs that count it; {} without a session.

        Never opens a session (that is the sampler's tick's job) and never raises."""
        with self._lock:
            if self._state != GPU_OK:
                return {}
            out = {}
            for device in self._devices:
                try:
                    value = self._field(
                        device,
                        "energy",
                        lambda h=device.handle: self._nvml.nvmlDeviceGetTotalEnergyConsumption(h),
                    )
                except _DeviceError:
                    continue  # the tick will notice and name the trouble
                if value is not None:
                    out[device.index] = int(value)
            return out

    def _read(self, *, slow: bool) -> GpuReading:
        if self._state != GPU_OK and (self._state is None or time.monotonic() >= self._retry_at):
            self.open()
        if self._state != GPU_OK:
            return GpuReading(self._state or NO_LIBRARY, self._detail)
        try:
            if slow:
                self._read_slow()
            self._energy_mj = []
            gpus = [self._read_fast(device) for device in self._devices]
        except Exception as exc:
            # A GPU lost mid-stream (or any NVML failure): say so, keep the host figures going,
            # and try a fresh session after retry_seconds.
            state = f"error: {_message(exc)}"
            self._shutdown()
            self._retry_at = time.monotonic() + self._retry_seconds
            self._fail(state, _error_sentence(exc))
            return GpuReading(state, self._detail)
        energy = {
            g["index"]: mj for g, mj in zip(gpus, self._energy_mj, strict=True) if mj is not None
        }
        return GpuReading(
            GPU_OK,
            "",
            gpus,
            dict(self._process_memory),
            {pid: set(indexes) for pid, indexes in self._process_gpus.items()},
            energy,
        )

    def _read_fast(self, device: _Device) -> GpuFigures:
        nvml, h = self._nvml, device.handle
        rates = self._field(device, "util", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        memory = self._field(device, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        temp = self._field(
            device, "temp", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
        )
        power_mw = self._field(device, "power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        energy_mj = self._field(
            device, "energy", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        )
        self._energy_mj.append(int(energy_mj) if energy_mj is not None else None)
        slow = device.slow
        health = gpu_health.read_fast(nvml, h, device.health, self._caller(device), temp)
        figures: dict[str, Any] = {
            "index": device.index,
            "name": device.name,
            "util": int(rates.gpu) if rates is not None else None,
            "mem_util": int(rates.memory) if rates is not None else None,
            "mem_used": int(memory.used) if memory is not None else None,
            "mem_total": int(memory.total) if memory is not None else None,
            "temp": int(temp) if temp is not None else None,
            "power": round(power_mw / 1000, 1) if power_mw is not None else None,
            "power_limit": slow.get("power_limit"),
            "sm_clock": slow.get("sm_clock"),
            "mem_clock": slow.get("mem_clock"),
            "fan": slow.get("fan"),
            "energy": int(energy_mj // 1000) if energy_mj is not None else None,
            "pcie_rx": slow.get("pcie_rx"),
            "pcie_tx": slow.get("pcie_tx"),
        }
        figures.update(health)
        figures.update(gpu_health.figures(device.health, int(time.time() * 1000)))
        return cast(GpuFigures, figures)

    def _read_slow(self) -> None:
        nvml = self._nvml
        pcie_due = {
            (self._pcie_next + k) % len(self._devices)
            for k in range(min(PCIE_GPUS_PER_SLOW_TICK, len(self._devices)))
        }
        self._pcie_next = (self._pcie_next + PCIE_GPUS_PER_SLOW_TICK) % len(self._devices)
        process_memory: dict[int, int] = {}
        process_gpus: dict[int, set[int]] = {}
        for device in self._devices:
            h, slow = device.handle, device.slow
            limit = self._field(
                device, "power_limit", lambda h=h: nvml.nvmlDeviceGetEnforcedPowerLimit(h)
            )
            slow["power_limit"] = round(limit / 1000) if limit is not None else None
            slow["sm_clock"] = self._field(
                device, "sm_clock", lambda h=h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)
            )
            slow["mem_clock"] = self._field(
                device, "mem_clock", lambda h=h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)
            )
            slow["fan"] = self._field(device, "fan", lambda h=h: nvml.nvmlDeviceGetFanSpeed(h))
            if device.index in pcie_due:
                for key, counter in (
                    ("pcie_rx", nvml.NVML_PCIE_UTIL_RX_BYTES),
                    ("pcie_tx", nvml.NVML_PCIE_UTIL_TX_BYTES),
                ):
                    kb_s = self._field(
                        device, key, lambda h=h, c=counter: nvml.nvmlDeviceGetPcieThroughput(h, c)
                    )
                    slow[key] = int(kb_s) * 1024 if kb_s is not None else None
            processes = self._field(
                device, "processes", lambda h=h: nvml.nvmlDeviceGetComputeRunningProcesses(h)
            )
            call = self._caller(device)
            gpu_health.read_slow(nvml, h, device.health, call)
            device.health.slow["procs"] = gpu_health.processes(
                nvml, h, device.health, call, processes
            )
            for process in processes or ():
                process_gpus.setdefault(process.pid, set()).add(device.index)
                used = getattr(process, "usedGpuMemory", None)
                if used is not None:
                    process_memory[process.pid] = process_memory.get(process.pid, 0) + int(used)
        self._process_memory = process_memory
        self._process_gpus = process_gpus

    def _caller(self, device: _Device) -> gpu_health.FieldCall:
        return lambda name, call: self._field(device, name, call)

    def _field(self, device: _Device, name: str, call: Any) -> Any:
        """One NVML call; a field the GPU does not support is None and not asked for again
        (NotSupported, NoPermission, or FunctionNotFound from a driver older than the
        nvidia-ml-py). Any other NVML error propagates: the session is treated as broken."""
        if name in device.unsupported:
            return None
        try:
            return call()
        except Exception as exc:
            if any(_is(self._nvml, exc, unsupported) for unsupported in UNSUPPORTED):
                device.unsupported.add(name)
                return None
            raise _DeviceError(f"GPU {device.index}: {_message(exc)}") from exc


UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound")

NVML_MODULE_VARIABLE = "OPSDASH_NVML_MODULE"


def _import_nvml() -> Any:
    """``pynvml``, or what ``OPSDASH_NVML_MODULE`` names: a module, or ``module:factory`` whose
    call returns the object to use (``tests.telemetry.fake_nvml:eight_gpus`` gives a benchmark's
    agent processes the tests' fake 8-GPU node). Read here rather than in settings because the
    probes are framework-free; unset, it is the real library."""
    name = os.environ.get(NVML_MODULE_VARIABLE, "").strip() or "pynvml"
    if name == "pynvml":
        import pynvml

        return pynvml
    module_name, _, factory = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"{name!r} cannot be imported") from None
    return getattr(module, factory)() if factory else module


class _DeviceError(Exception):
    """An NVML failure on one GPU, named by its index."""


def _is(nvml: Any, exc: BaseException, name: str) -> bool:
    cls = getattr(nvml, name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _error_sentence(exc: BaseException) -> str:
    return f"NVML failed: {_message(exc)}. OpsDash tries a fresh NVML session every minute."


def library_present() -> bool:
    """Whether the driver's NVML library can be loaded here (without starting a session)."""
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def main() -> None:
    """``python -m opsdash.telemetry.probes.nvml``: what this probe reads on this host, as JSON
    (two slow reads a second apart, so rates, durations and samples have a previous read):
    the ``OPSDASH_PROBE_CMD`` of ``shared/gpu/nvml-check.sh`` on a machine with a real GPU."""
    import json

    probe = NvmlProbe()
    started = time.perf_counter()
    probe.read(slow=True)
    first_ms = (time.perf_counter() - started) * 1000
    time.sleep(1.0)
    started = time.perf_counter()
    reading = probe.read(slow=True)
    slow_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    probe.read(slow=False)
    fast_ms = (time.perf_counter() - started) * 1000
    unsupported = {d.index: sorted(d.unsupported) for d in probe._devices}
    probe.close()
    out = {
        "state": reading.state,
        "detail": reading.detail,
        "timings_ms": {
            "open_and_first_slow_read": round(first_ms, 1),
            "slow_read": round(slow_ms, 1),
            "fast_read": round(fast_ms, 1),
        },
        "gpus": reading.gpus,
        "unsupported": unsupported,  # GPU → the fields its driver does not answer
    }
    print(json.dumps(out, indent=1, default=str))  # noqa: T201 (a command's output)


if __name__ == "__main__":
    main()
