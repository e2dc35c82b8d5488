"""The NVML probe in every state a host can be in, through the fake module; and the real one."""

from __future__ import annotations

import sys

import pynvml

from opsdash.telemetry.probes.nvml import SENTENCES, NvmlProbe
from tests.telemetry.fake_nvml import (
    GIB,
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    NVMLError_NoPermission,
)


def test_the_fake_offers_only_functions_and_names_the_real_pynvml_has():
    names = [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML"))]
    assert len(names) > 20
    assert [n for n in names if not hasattr(pynvml, n)] == []


def test_one_gpu_reports_every_figure_in_base_units():
    nvml = FakeNvml(gpus=1, processes={0: [(4242, 6 * GIB)]})
    probe = NvmlProbe(nvml)

    reading = probe.read(slow=True)

    assert reading.state == "ok" and reading.detail == ""
    [gpu] = reading.gpus
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["index"] == 0
    assert gpu["util"] == 87 and gpu["mem_util"] == 41
    assert (gpu["mem_used"], gpu["mem_total"]) == (30 * GIB, 80 * GIB)
    assert gpu["temp"] == 64
    assert gpu["power"] == 612.3 and gpu["power_limit"] == 700.0  # W from mW
    assert (gpu["sm_clock"], gpu["mem_clock"]) == (1980, 2619)
    assert gpu["fan"] is None  # passively cooled: not supported, not an error
    assert gpu["energy"] == 123_456_789  # J from mJ
    assert (gpu["pcie_rx"], gpu["pcie_tx"]) == (1_500_000 * 1024, 250_000 * 1024)
    assert reading.process_memory == {4242: 6 * GIB}


def test_slow_fields_are_kept_between_slow_reads_and_unsupported_ones_not_asked_again():
    nvml = FakeNvml(gpus=1)
    probe = NvmlProbe(nvml)
    probe.read(slow=True)
    reads = nvml.pcie_reads

    fast = probe.read(slow=False)

    assert fast.gpus[0]["sm_clock"] == 1980 and fast.gpus[0]["power_limit"] == 700.0
    assert nvml.pcie_reads == reads, "PCIe throughput is a slow field"


def test_eight_gpus_are_read_and_pcie_is_sampled_a_few_gpus_at_a_time():
    nvml = FakeNvml(gpus=8, processes={3: [(10, GIB)], 5: [(10, 2 * GIB), (11, GIB)]})
    probe = NvmlProbe(nvml)

    first = probe.read(slow=True)

    assert [g["index"] for g in first.gpus] == list(range(8))
    assert nvml.pcie_reads == 4, "two GPUs × two directions per slow tick (20 ms each)"
    assert sum(g["pcie_rx"] is not None for g in first.gpus) == 2
    assert first.process_memory == {10: 3 * GIB, 11: GIB}, "a runner's memory summed over GPUs"
    for _ in range(3):
        probe.read(slow=True)
    assert all(g["pcie_rx"] is not None for g in probe.read(slow=False).gpus)


def test_no_python_package_is_no_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError

    reading = NvmlProbe().read(slow=True)

    assert reading.state == "no_library" and reading.gpus == []
    assert "nvidia-ml-py" in reading.detail


def test_no_shared_library_is_no_library_and_says_the_driver_is_not_installed():
    reading = NvmlProbe(FakeNvml(init_error=NVMLError_LibraryNotFound)).read(slow=True)

    assert reading.state == "no_library"
    assert reading.detail == SENTENCES["no_library"]
    assert "No NVIDIA driver is installed" in reading.detail


def test_a_driver_that_is_not_loaded_is_no_driver():
    reading = NvmlProbe(FakeNvml(init_error=NVMLError_DriverNotLoaded)).read(slow=True)

    assert reading.state == "no_driver" and "not loaded" in reading.detail


def test_a_driver_without_gpus_is_no_devices():
    nvml = FakeNvml(gpus=0)
    reading = NvmlProbe(nvml).read(slow=True)

    assert reading.state == "no_devices" and reading.gpus == []
    assert nvml.shutdowns == 1, "the session is closed again"


def test_any_other_init_failure_is_an_error_with_its_message():
    reading = NvmlProbe(FakeNvml(init_error=NVMLError_NoPermission)).read(slow=True)

    assert reading.state == "error: Insufficient Permissions"


def test_a_gpu_lost_mid_stream_is_an_error_then_a_fresh_session_recovers(monkeypatch):
    nvml = FakeNvml(gpus=2)
    probe = NvmlProbe(nvml, retry_seconds=0.0)
    assert probe.read(slow=True).state == "ok"

    nvml.lose(1)
    lost = probe.read(slow=False)

    assert lost.state == "error: GPU 1: GPU is lost" and lost.gpus == []
    assert "GPU is lost" in lost.detail and nvml.shutdowns == 1
    nvml.lost.clear()
    again = probe.read(slow=True)
    assert again.state == "ok" and len(again.gpus) == 2 and nvml.inits == 2


def test_a_failed_session_is_not_retried_before_the_retry_interval():
    nvml = FakeNvml(init_error=NVMLError_DriverNotLoaded)
    probe = NvmlProbe(nvml, retry_seconds=60)
    for _ in range(5):
        probe.read(slow=True)
    assert nvml.inits == 1


def test_this_machine_names_its_state_and_explains_it():
    """The real nvidia-ml-py on this host: a named state, never an exception."""
    reading = NvmlProbe().read(slow=True)

    if reading.state == "ok":
        assert reading.gpus, "NVML is up, so there are GPUs to show"
    else:
        assert reading.state in {
            "no_library",
            "no_driver",
            "no_devices",
        } or reading.state.startswith("error: ")
        assert reading.detail.endswith(".") and reading.gpus == []
        print(f"NVML on this machine: {reading.state}: {reading.detail}")
