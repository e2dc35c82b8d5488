"""GPU health through the fake NVML: every figure, what an unsupporting GPU shows, XID events,
the alerts they raise and clear, and their /metrics families."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsdash.telemetry import alerts
from opsdash.telemetry.metrics import TelemetryCollector, render
from opsdash.telemetry.probes import gpu_health
from opsdash.telemetry.probes.nvml import NvmlProbe
from opsdash.telemetry.sampler import Sampler
from tests.telemetry.fake_nvml import (
    GIB,
    NVML_AGGREGATE_ECC,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_PERF_POLICY_POWER,
    NVML_PERF_POLICY_THERMAL,
    NVML_VOLATILE_ECC,
    FakeNvml,
    nvmlClocksEventReasonGpuIdle,
    nvmlClocksEventReasonHwSlowdown,
    nvmlClocksEventReasonSwPowerCap,
    nvmlClocksEventReasonSwThermalSlowdown,
)

HEALTH_FUNCTIONS = {
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetMarginTemperature",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRetiredPages",
    "nvmlDeviceGetRetiredPagesPendingStatus",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetViolationStatus",
    "nvmlDeviceRegisterEvents",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetComputeRunningProcesses",
}
HEALTH_KEYS = {
    "margin",
    "slowdown",
    "throttle",
    "ecc",
    "retired",
    "remap",
    "viol",
    "xid",
    "xid_total",
    "procs",
}


class Clock:
    """gpu_health's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


@pytest.fixture
def clock(monkeypatch) -> Clock:  # type: ignore[no-untyped-def]
    fake = Clock()
    monkeypatch.setattr(gpu_health, "time", fake)
    return fake


def troubled_nvml() -> FakeNvml:
    """One hot GPU with every kind of trouble: throttled, ECC errors, a pending remap."""
    nvml = FakeNvml(
        gpus=2,
        temperature=86,
        processes={0: [(4242, 6 * GIB), (4343, GIB)]},
        process_util={0: [(4242, 93, 40)]},
    )
    health = nvml.gpu(0)
    health.reasons = nvmlClocksEventReasonSwPowerCap | nvmlClocksEventReasonHwSlowdown
    health.ecc = {
        (NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC): 12,
        (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC): 1,
        (NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_AGGREGATE_ECC): 340,
        (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC): 2,
    }
    health.remapped = (3, 1, 1, 0)
    health.violation_ns = {NVML_PERF_POLICY_POWER: 12_345_000_000, NVML_PERF_POLICY_THERMAL: 0}
    return nvml


# --- the probe --------------------------------------------------------------------------------


def test_every_health_figure_reads_through_in_base_units(clock):
    nvml = troubled_nvml()
    probe = NvmlProbe(nvml)

    probe.read(slow=True)
    clock.now += 7
    [gpu, calm] = probe.read(slow=True).gpus

    assert (gpu["margin"], gpu["slowdown"]) == (3, 89), "89 °C slowdown − 86 °C"
    assert gpu["throttle"] == {"sw_power_cap": 7, "hw_slowdown": 7}, "seconds active"
    assert gpu["ecc"] == [12, 1, 340, 2], "volatile corr/uncorr, aggregate corr/uncorr"
    assert gpu["retired"] is None, "an H100 remaps rows instead of retiring pages"
    assert gpu["remap"] == [3, 1, 1, 0]
    assert gpu["viol"] == [12.3, 0.0], "seconds from ns"
    assert gpu["xid"] == [] and gpu["xid_total"] == 0
    assert gpu["procs"] == [[4242, 6 * GIB, 93, 40], [4343, GIB, 0, 0]], "no sample: idle"
    assert calm["throttle"] == {} and calm["ecc"] == [0, 0, 0, 0] and calm["procs"] == []
    json.dumps(gpu, allow_nan=False)  # the frame's one serialization takes it as it is


def test_a_reason_that_stops_and_starts_again_counts_from_its_new_start(clock):
    nvml = FakeNvml(gpus=1)
    probe = NvmlProbe(nvml)
    nvml.gpu(0).reasons = nvmlClocksEventReasonSwThermalSlowdown | nvmlClocksEventReasonGpuIdle
    probe.read(slow=True)
    clock.now += 30
    assert probe.read(slow=False).gpus[0]["throttle"] == {"gpu_idle": 30, "sw_thermal": 30}

    nvml.gpu(0).reasons = 0
    assert probe.read(slow=False).gpus[0]["throttle"] == {}
    nvml.gpu(0).reasons = nvmlClocksEventReasonSwThermalSlowdown | 0x8000
    clock.now += 2
    assert probe.read(slow=False).gpus[0]["throttle"] == {"sw_thermal": 0, "0x8000": 0}


def test_a_gpu_that_supports_none_of_it_is_still_listed_with_none_for_each_figure():
    nvml = FakeNvml(gpus=2, unsupported=set(HEALTH_FUNCTIONS))
    probe = NvmlProbe(nvml)

    reading = probe.read(slow=True)
    again = probe.read(slow=True)

    assert reading.state == "ok" and [g["index"] for g in again.gpus] == [0, 1]
    for gpu in again.gpus:
        assert {key: gpu[key] for key in HEALTH_KEYS} == dict.fromkeys(HEALTH_KEYS)  # type: ignore[literal-required]
        assert gpu["util"] == 87 and gpu["temp"] == 64, "the basic figures go on"
    assert nvml.event_sets == 2 and nvml.event_sets_freed == 2, "no XID set left registered"


def test_an_older_driver_without_the_new_calls_gets_the_old_ones():
    nvml = FakeNvml(
        gpus=1,
        temperature=70,
        missing={"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetMarginTemperature"},
    )
    nvml.gpu(0).reasons = nvmlClocksEventReasonSwPowerCap
    probe = NvmlProbe(nvml)

    gpu = probe.read(slow=True).gpus[0]

    assert gpu["throttle"] == {"sw_power_cap": 0}, "from nvmlDeviceGetCurrentClocksThrottleReasons"
    assert gpu["margin"] == 19, "slowdown threshold − temperature"


def test_a_pre_ampere_gpu_reports_retired_pages_and_no_remapping():
    nvml = FakeNvml(gpus=1, unsupported={"nvmlDeviceGetRemappedRows"})
    nvml.gpu(0).retired = {0: 2, 1: 1}
    nvml.gpu(0).retired_pending = 1

    gpu = NvmlProbe(nvml).read(slow=True).gpus[0]

    assert gpu["retired"] == [2, 1, 1] and gpu["remap"] is None


def test_process_utilization_unsupported_keeps_the_memory_and_says_none_for_the_rest():
    nvml = FakeNvml(
        gpus=1,
        processes={0: [(7, 3 * GIB)]},
        unsupported={"nvmlDeviceGetProcessUtilization"},
    )

    gpu = NvmlProbe(nvml).read(slow=True).gpus[0]

    assert gpu["procs"] == [[7, 3 * GIB, None, None]]


@pytest.mark.parametrize("as_success", [False, True], ids=["not_found", "success"])
def test_no_process_samples_since_the_last_read_is_idle_not_a_broken_session(as_success):
    nvml = FakeNvml(gpus=1, processes={0: [(7, GIB)]}, no_samples_as_success=as_success)

    reading = NvmlProbe(nvml).read(slow=True)

    assert reading.state == "ok" and reading.gpus[0]["procs"] == [[7, GIB, 0, 0]]


def test_an_xid_event_surfaces_once_and_leaves_after_ten_minutes(monkeypatch):
    nvml = FakeNvml(gpus=2)
    probe = NvmlProbe(nvml)
    probe.read(slow=True)

    nvml.fire_xid(1, 79)
    assert probe.read(slow=False).gpus[1]["xid"] == [], "events are read on the slow tick"
    first = probe.read(slow=True).gpus
    later = [probe.read(slow=True).gpus for _ in range(3)][-1]

    [[xid, at]] = first[1]["xid"]
    assert xid == 79 and abs(at - time.time() * 1000) < 5000
    assert later[1]["xid"] == [[79, at]] and later[1]["xid_total"] == 1, "read once, not again"
    assert first[0]["xid"] == [] and first[0]["xid_total"] == 0, "GPU 0 had none"
    nvml.fire_xid(1, 48)
    assert [x for x, _ in probe.read(slow=True).gpus[1]["xid"]] == [79, 48]

    monkeypatch.setattr(gpu_health, "XID_RECENT_SECONDS", 0)
    gone = probe.read(slow=False).gpus[1]
    assert gone["xid"] == [] and gone["xid_total"] == 2, "the count stays a counter"


def test_a_reopened_session_frees_its_event_sets_and_registers_new_ones():
    nvml = FakeNvml(gpus=2)
    probe = NvmlProbe(nvml, retry_seconds=0.0)
    probe.read(slow=True)
    nvml.lose(1)
    assert probe.read(slow=True).state.startswith("error: GPU 1")
    nvml.lost.clear()
    nvml.fire_xid(0, 13)

    gpus = probe.read(slow=True).gpus

    assert [x for x, _ in gpus[0]["xid"]] == [13] and nvml.event_sets == 4
    probe.close()
    assert nvml.event_sets_freed == 2, "the live session's two sets, at close"


def test_the_benchmark_gets_the_fake_eight_gpu_node_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPSDASH_NVML_MODULE", "tests.telemetry.fake_nvml:eight_gpus")

    reading = NvmlProbe().read(slow=True)

    assert reading.state == "ok" and len(reading.gpus) == 8
    assert all(g["procs"] and g["procs"][0][2] == 87 for g in reading.gpus)


def test_a_wrong_nvml_module_setting_is_a_named_error_that_says_which_setting(monkeypatch):
    monkeypatch.setenv("OPSDASH_NVML_MODULE", "tests.telemetry.no_such_module")

    reading = NvmlProbe().read(slow=True)

    assert reading.state.startswith("error: ") and reading.gpus == []
    assert "OPSDASH_NVML_MODULE" in reading.detail and reading.detail.endswith(".")


# --- alerts -----------------------------------------------------------------------------------


def frame_of(tmp_path, nvml: FakeNvml) -> Any:  # type: ignore[no-untyped-def]
    sampler = Sampler(tick_seconds=1.0, host="gpu-7", models_dir=tmp_path, nvml=nvml, persist=False)
    return sampler.tick()


GPU_RULES = [
    alerts.Rule(kind, threshold)
    for kind, threshold in alerts.DEFAULT_THRESHOLDS.items()
    if kind.startswith("gpu_")
]


def test_each_health_rule_fires_on_its_gpu_and_names_it(tmp_path, clock):
    nvml = troubled_nvml()
    nvml.fire_xid(0, 79)
    frame = frame_of(tmp_path, nvml)

    found = {(b.kind, b.subject): b for b in alerts.breaches(frame, GPU_RULES)}

    assert set(found) == {
        ("gpu_thermal_margin", "GPU 0"),
        ("gpu_thermal_margin", "GPU 1"),
        ("gpu_throttle", "GPU 0"),
        ("gpu_xid", "GPU 0"),
        ("gpu_ecc", "GPU 0"),
        ("gpu_retirement", "GPU 0"),
    }, "no fixed-temperature alert while the margin is known; power cap not yet 60 s"
    assert alerts.describe("gpu_thermal_margin", "GPU 0", 3, 5) == (
        "GPU 0 is 3 °C from its slowdown temperature, under the 5 °C margin"
    )
    assert "1 uncorrected ECC error(s)" in alerts.describe("gpu_ecc", "GPU 0", 1, 1)
    assert "XID" in alerts.describe("gpu_xid", "GPU 0", 1, 1)
    assert "power cap for 61 s" in alerts.describe("gpu_power_cap", "GPU 0", 61, 60)


def test_power_capping_alerts_only_once_it_has_lasted_and_it_clears(tmp_path, clock):
    nvml = FakeNvml(gpus=1)
    nvml.gpu(0).reasons = nvmlClocksEventReasonSwPowerCap
    sampler = Sampler(tick_seconds=1.0, host="gpu-7", models_dir=tmp_path, nvml=nvml, persist=False)
    tracker = alerts.AlertTracker(raise_after=1, clear_after=1)
    rules = [alerts.Rule("gpu_power_cap", 60)]

    def tick() -> alerts.Changes:
        frame = sampler.tick()
        return tracker.update(alerts.breaches(frame, rules), frame["t"])

    assert not tick().opened
    clock.now += 59
    assert not tick().opened
    clock.now += 1
    [opened] = tick().opened
    assert (opened.subject, opened.value) == ("GPU 0", 60)
    assert opened.message == "GPU 0 held at its power cap for 60 s (alert from 60 s)"

    nvml.gpu(0).reasons = 0
    [closed] = tick().closed
    assert closed.kind == "gpu_power_cap" and tracker.figures() == []


def test_a_clean_frame_raises_nothing_and_the_error_alerts_clear_when_the_errors_go(tmp_path):
    nvml = FakeNvml(gpus=1, temperature=60)
    tracker = alerts.AlertTracker(raise_after=1, clear_after=1)
    assert alerts.breaches(frame_of(tmp_path, nvml), GPU_RULES) == []

    nvml.gpu(0).ecc = {(NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC): 3}
    nvml.gpu(0).remapped = (0, 0, 0, 1)
    frame = frame_of(tmp_path, nvml)
    opened = tracker.update(alerts.breaches(frame, GPU_RULES), frame["t"]).opened
    assert sorted(e.kind for e in opened) == ["gpu_ecc", "gpu_retirement"]

    nvml.health.clear()  # the driver reloaded after a GPU reset: volatile counters are back to 0
    frame = frame_of(tmp_path, nvml)
    closed = tracker.update(alerts.breaches(frame, GPU_RULES), frame["t"]).closed
    assert sorted(e.kind for e in closed) == ["gpu_ecc", "gpu_retirement"]


def test_without_a_known_slowdown_temperature_the_fixed_temperature_rule_applies(tmp_path):
    nvml = FakeNvml(
        gpus=1,
        temperature=91,
        unsupported={"nvmlDeviceGetTemperatureThreshold", "nvmlDeviceGetMarginTemperature"},
    )

    found = alerts.breaches(
        frame_of(tmp_path, nvml), [alerts.Rule(k, v) for k, v in alerts.DEFAULT_THRESHOLDS.items()]
    )

    gpu = [(b.kind, b.value) for b in found if b.subject == "GPU 0"]
    assert gpu == [("gpu_temperature", 91)]


def test_a_frame_from_an_agent_without_health_figures_raises_no_health_alert(tmp_path):
    frame = frame_of(tmp_path, FakeNvml(gpus=1, temperature=91))
    for key in HEALTH_KEYS:
        del frame["gpus"][0][key]  # type: ignore[misc]

    found = alerts.breaches(frame, GPU_RULES)

    assert [(b.kind, b.subject) for b in found] == [("gpu_temperature", "GPU 0")], "fallback"


# --- /metrics ---------------------------------------------------------------------------------


def test_the_health_figures_are_exported_with_dcgm_like_names_and_labels(tmp_path, clock):
    from tests.telemetry.test_metrics import lint

    nvml = troubled_nvml()
    nvml.fire_xid(0, 79)
    frame = frame_of(tmp_path, nvml)

    text = render(TelemetryCollector(lambda: [frame], lambda: [], host="gpu-7")).decode()

    assert lint(text) == []
    found = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("host", "gpu")))): s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("gpu") == "0"
    }

    def value(name: str, **labels: str) -> float:
        sample = found[(name, tuple(sorted(labels.items())))]
        assert sample.labels["host"] == "gpu-7"
        return float(sample.value)

    ecc = "opsdash_gpu_ecc_errors_total"
    assert value(ecc, type="corrected", counter="volatile") == 12
    assert value(ecc, type="uncorrected", counter="volatile") == 1
    assert value(ecc, type="corrected", counter="aggregate") == 340
    assert value(ecc, type="uncorrected", counter="aggregate") == 2
    assert value("opsdash_gpu_remapped_rows", type="correctable") == 3
    assert value("opsdash_gpu_remapped_rows", type="uncorrectable") == 1
    assert value("opsdash_gpu_row_remap_pending") == 1
    assert value("opsdash_gpu_row_remap_failure") == 0
    assert not [k for k in found if k[0].startswith("opsdash_gpu_retired_pages")], "unsupported"
    assert value("opsdash_gpu_throttle_reasons", reason="sw_power_cap") == 1
    assert value("opsdash_gpu_throttle_reasons", reason="hw_slowdown") == 1
    assert value("opsdash_gpu_throttle_reasons", reason="hw_thermal") == 0
    assert value("opsdash_gpu_violation_seconds_total", policy="power") == 12.3
    assert value("opsdash_gpu_violation_seconds_total", policy="thermal") == 0
    assert value("opsdash_gpu_xid_errors_total") == 1
    assert value("opsdash_gpu_last_xid") == 79
    assert value("opsdash_gpu_thermal_margin_celsius") == 3
    assert value("opsdash_gpu_slowdown_temperature_celsius") == 89
    assert value("opsdash_gpu_process_memory_bytes", pid="4242") == 6 * GIB
    assert value("opsdash_gpu_process_sm_utilization_ratio", pid="4242") == 0.93
    assert value("opsdash_gpu_process_memory_utilization_ratio", pid="4343") == 0


def test_a_scrape_of_a_frame_without_health_figures_still_renders(tmp_path):
    frame = frame_of(tmp_path, FakeNvml(gpus=1))
    for key in HEALTH_KEYS:
        del frame["gpus"][0][key]  # type: ignore[misc]

    text = render(TelemetryCollector(lambda: [frame], lambda: [], host="gpu-7")).decode()

    assert "opsdash_gpu_temperature_celsius" in text and "opsdash_gpu_ecc_errors" not in text


def test_the_probe_command_prints_what_it_reads_for_the_real_gpu_check():
    """``python -m opsdash.telemetry.probes.nvml`` is the OPSDASH_PROBE_CMD of
    shared/gpu/nvml-check.sh: a real process, here with the fake node from the environment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OPSDASH_NVML_MODULE": "tests.telemetry.fake_nvml:eight_gpus"}
    done = subprocess.run(
        [sys.executable, "-m", "opsdash.telemetry.probes.nvml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    out = json.loads(done.stdout)
    assert out["state"] == "ok" and len(out["gpus"]) == 8
    assert out["gpus"][0]["ecc"] == [0, 0, 0, 0] and out["gpus"][0]["margin"] == 25
    assert "nvmlDeviceGetRetiredPages" not in str(out["unsupported"])
    assert out["unsupported"]["0"] == ["fan", "retired_0", "retired_1", "retired_pending"]
