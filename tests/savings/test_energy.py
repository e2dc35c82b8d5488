"""Energy: counters where readable (RAPL with wrap-around, NVML), shared by overlap; else estimated.

This machine has neither RAPL nor NVML, so the measured path reads a powercap tree written to a
temporary folder by the same code that reads /sys, and NVML is the one faked module.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.utils import timezone

from opsdash.runs.models import Run, RunStatus
from opsdash.savings import energy
from opsdash.savings.energy import EnergyMeter, Span, measured_energy_uj, rapl_counters
from opsdash.savings.models import EnergySource, RunCost
from opsdash.savings.services import price_run
from tests.savings.factories import finished_run, local_model, started_run, workflow

WATTS = 10  # the fake package draws 10 W: 10 000 000 µJ a second
WRAP = 100_000_000  # and its counter restarts every 100 J


class FakePowercap:
    """A /sys/class/powercap tree: one package zone (and a sub-zone that must be ignored)."""

    def __init__(self, root: Path) -> None:
        self.zone = root / "intel-rapl:0"
        (self.zone / "intel-rapl:0:0").mkdir(parents=True)
        (self.zone / "max_energy_range_uj").write_text(f"{WRAP}\n")
        (self.zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
        (root / "intel-rapl:1").mkdir()  # a zone this user cannot read: no energy_uj at all
        self.set(0)

    def set(self, microjoules: int) -> None:
        (self.zone / "energy_uj").write_text(f"{microjoules % WRAP}\n")


@pytest.fixture
def rapl(tmp_path: Path) -> FakePowercap:
    return FakePowercap(tmp_path)


def _sample_every_second(
    meter: EnergyMeter, rapl: FakePowercap, start: float, seconds: int
) -> None:
    for i in range(seconds + 1):
        rapl.set(37_000_000 + WATTS * 1_000_000 * i)  # starts near a wrap, wraps twice
        meter.sample(at=start + i)


def test_only_readable_top_level_rapl_packages_are_counters(rapl: FakePowercap) -> None:
    counters = rapl_counters(rapl.zone.parent)
    assert [c.device for c in counters] == ["cpu:intel-rapl:0"]
    assert counters[0].wrap_uj == WRAP


def test_a_wrapping_counter_still_gives_the_energy_used(rapl: FakePowercap) -> None:
    meter = EnergyMeter(rapl_counters(rapl.zone.parent))
    _sample_every_second(meter, rapl, 1000.0, 20)
    assert meter.energy_uj("cpu:intel-rapl:0", 1000.0, 1020.0) == 200_000_000
    assert meter.energy_uj("cpu:intel-rapl:0", 1002.5, 1003.0) == 5_000_000  # interpolated
    assert meter.energy_uj("cpu:intel-rapl:0", 990.0, 1010.0) is None  # before the first sample


def test_overlapping_runs_share_the_device_by_their_overlap(rapl: FakePowercap) -> None:
    meter = EnergyMeter(rapl_counters(rapl.zone.parent))
    _sample_every_second(meter, rapl, 0.0, 20)
    device = frozenset({"cpu:intel-rapl:0"})
    first, second = Span(0, 10, device), Span(5, 15, device)
    # 0–5 s alone (50 J), 5–10 s shared (25 J each), 10–15 s alone (50 J).
    assert measured_energy_uj(meter, first, [second]) == 75_000_000
    assert measured_energy_uj(meter, second, [first]) == 75_000_000
    assert measured_energy_uj(meter, Span(0, 15, frozenset()), []) is None


@pytest.mark.django_db
def test_finalized_runs_get_measured_energy_shared_with_the_run_beside_them(
    rapl: FakePowercap,
) -> None:
    meter = EnergyMeter(rapl_counters(rapl.zone.parent))
    energy.set_meter(meter)
    t0 = timezone.now().replace(microsecond=0) - timedelta(seconds=60)
    _sample_every_second(meter, rapl, t0.timestamp(), 20)
    flow, model = workflow("notes"), local_model()
    a = started_run(flow, model, started_at=t0)
    b = started_run(flow, model, started_at=t0 + timedelta(seconds=5))

    def finish(run: Run, at: datetime) -> RunCost:
        Run.objects.filter(pk=run.pk).update(status=RunStatus.OK, finished_at=at)
        run.refresh_from_db()
        with transaction.atomic():
            cost = price_run(run=run)
        assert cost is not None
        return cost

    first = finish(a, t0 + timedelta(seconds=10))  # b is still running
    second = finish(b, t0 + timedelta(seconds=15))  # a is finished and measured
    assert first.energy_source == second.energy_source == EnergySource.MEASURED
    assert first.energy_mj == second.energy_mj == 75_000
    assert first.energy_devices == ["cpu:intel-rapl:0"]
    assert "shared with 1 overlapping run" in second.energy_basis

    # A run that began before the meter's first sample cannot be measured: it is estimated.
    early = finished_run(flow, model, started_at=t0 - timedelta(seconds=30))
    assert RunCost.objects.get(run=early).energy_source == EnergySource.ESTIMATED


class FakeNvml:
    """The NVML functions the meter calls, for one GPU running process 4242."""

    def __init__(self) -> None:
        self.millijoules = 1_000_000

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu-{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        return self.millijoules

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=1 << 30)]


def test_a_runner_on_a_gpu_is_charged_that_gpus_energy_counter() -> None:
    nvml = FakeNvml()
    meter = EnergyMeter(energy.nvml_counters(nvml), nvml=nvml)
    for second in range(11):
        nvml.millijoules = 1_000_000 + 250_000 * second  # 250 W
        meter.sample(at=float(second))
    assert meter.devices_for(4242) == {"gpu:0"}
    assert meter.devices_for(1) == frozenset()
    span = Span(2, 6, meter.devices_for(4242))
    assert measured_energy_uj(meter, span, []) == 1_000_000_000  # 4 s × 250 W = 1 kJ


def test_without_nvml_there_are_no_gpu_counters() -> None:
    class Missing:
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    assert energy.nvml_counters(Missing()) == []
