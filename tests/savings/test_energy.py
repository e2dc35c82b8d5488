"""Energy: counters where readable (RAPL with wrap-around, NVML), shared by overlap; else estimated.

The counters are read by the host's one sampler through its probes; savings asks the sampler's
record. This machine has neither RAPL nor NVML, so the measured path reads a powercap tree
written to a temporary folder by the same code that reads /sys, and NVML is the one faked
module, handed to the sampler's NVML probe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from opsdash.runs.models import Run, RunStatus
from opsdash.savings.energy import Span, measured_energy_uj
from opsdash.savings.models import EnergySource, RunCost
from opsdash.savings.services import price_run
from opsdash.telemetry import energy
from opsdash.telemetry.energy import HostEnergy
from opsdash.telemetry.probes.rapl import RaplProbe
from opsdash.telemetry.sampler import Sampler
from tests.savings.factories import finished_run, local_model, started_run, workflow
from tests.telemetry.fake_nvml import GIB, FakeNvml, NVMLError_LibraryNotFound

WATTS = 10  # the fake package draws 10 W: 10 000 000 µJ a second
WRAP = 100_000_000  # and its counter restarts every 100 J


class FakePowercap:
    """A /sys/class/powercap tree: one package zone (and a sub-zone that must be ignored)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zone = root / "intel-rapl:0"
        (self.zone / "intel-rapl:0:0").mkdir(parents=True)
        (self.zone / "max_energy_range_uj").write_text(f"{WRAP}\n")
        (self.zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
        (root / "intel-rapl:1").mkdir()  # a zone this user cannot read: no energy_uj at all
        self.set(0)

    def set(self, microjoules: int) -> None:
        # Written beside and renamed over, as the kernel answers a read of energy_uj with the
        # whole number at once: rewritten in place (truncate, then write), the file is empty
        # for a moment, and a probe reading it beside a thread that draws (tests/fleet) lost
        # the zone or the run's closing reading, so a measured run came out estimated.
        staged = self.zone / "energy_uj.new"
        staged.write_text(f"{microjoules % WRAP}\n")
        os.replace(staged, self.zone / "energy_uj")


@pytest.fixture
def rapl(tmp_path: Path) -> FakePowercap:
    return FakePowercap(tmp_path / "powercap")


def host_sampler(tmp_path: Path, rapl: FakePowercap | None, nvml: FakeNvml) -> Sampler:
    """The host's sampler, not ticking by itself: the tests drive it."""
    return Sampler(
        tick_seconds=1.0,
        host="h",
        models_dir=tmp_path,
        nvml=nvml,
        persist=False,
        powercap=rapl.root if rapl is not None else tmp_path / "no-powercap",
    )


@pytest.fixture
def sampler(tmp_path: Path, rapl: FakePowercap) -> Iterator[Sampler]:
    """A host with one RAPL package and no GPU, whose sampler savings asks."""
    sampler = host_sampler(tmp_path, rapl, FakeNvml(gpus=0))
    energy.use_sampler(sampler)
    yield sampler
    energy.use_sampler()


def _sample_every_second(sampler: Sampler, rapl: FakePowercap, start: float, seconds: int) -> None:
    for i in range(seconds + 1):
        rapl.set(37_000_000 + WATTS * 1_000_000 * i)  # starts near a wrap, wraps twice
        sampler.record_energy(at=start + i)


def test_only_readable_top_level_rapl_packages_are_counters(rapl: FakePowercap) -> None:
    zones = RaplProbe(rapl.root).zones()
    assert [z.device for z in zones] == ["cpu:intel-rapl:0"]
    assert zones[0].wrap_uj == WRAP


def test_every_tick_of_the_sampler_records_the_energy_counters(
    sampler: Sampler, rapl: FakePowercap
) -> None:
    rapl.set(1_000_000)
    first = sampler.tick()["t"] / 1000
    rapl.set(4_000_000)
    second = sampler.tick()["t"] / 1000

    if second > first:  # two ticks within one millisecond share their instant
        assert HostEnergy(sampler.energy).energy_uj("cpu:intel-rapl:0", first, second) == 3e6
    assert sampler.energy.devices == {"cpu:intel-rapl:0"}


def test_a_wrapping_counter_still_gives_the_energy_used(
    sampler: Sampler, rapl: FakePowercap
) -> None:
    _sample_every_second(sampler, rapl, 1000.0, 20)
    meter = HostEnergy(sampler.energy)
    assert meter.energy_uj("cpu:intel-rapl:0", 1000.0, 1020.0) == 200_000_000
    assert meter.energy_uj("cpu:intel-rapl:0", 1002.5, 1003.0) == 5_000_000  # interpolated
    assert meter.energy_uj("cpu:intel-rapl:0", 990.0, 1010.0) is None  # before the first sample
    assert meter.energy_between(devices=["cpu:intel-rapl:0"], t0=1000.0, t1=1010.0) == 1e8


def test_overlapping_runs_share_the_device_by_their_overlap(
    sampler: Sampler, rapl: FakePowercap
) -> None:
    _sample_every_second(sampler, rapl, 0.0, 20)
    meter = HostEnergy(sampler.energy)
    device = frozenset({"cpu:intel-rapl:0"})
    first, second = Span(0, 10, device), Span(5, 15, device)
    # 0–5 s alone (50 J), 5–10 s shared (25 J each), 10–15 s alone (50 J).
    assert measured_energy_uj(meter, first, [second]) == 75_000_000
    assert measured_energy_uj(meter, second, [first]) == 75_000_000
    assert measured_energy_uj(meter, Span(0, 15, frozenset()), []) is None


@pytest.mark.django_db
def test_finalized_runs_get_measured_energy_shared_with_the_run_beside_them(
    sampler: Sampler, rapl: FakePowercap
) -> None:
    t0 = timezone.now().replace(microsecond=0) - timedelta(seconds=60)
    _sample_every_second(sampler, rapl, t0.timestamp(), 20)
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

    # A run that began before the sampler's first reading cannot be measured: it is estimated.
    early = finished_run(flow, model, started_at=t0 - timedelta(seconds=30))
    assert RunCost.objects.get(run=early).energy_source == EnergySource.ESTIMATED


@pytest.mark.django_db
def test_a_host_without_energy_counters_gets_estimates(tmp_path: Path) -> None:
    sampler = host_sampler(tmp_path, None, FakeNvml(init_error=NVMLError_LibraryNotFound))
    sampler.tick()
    energy.use_sampler(sampler)
    try:
        assert energy.host_energy() is None
        run = finished_run(workflow("notes"), local_model())
    finally:
        energy.use_sampler()
    assert RunCost.objects.get(run=run).energy_source == EnergySource.ESTIMATED


def test_a_runner_on_a_gpu_is_charged_that_gpus_energy_counter(tmp_path: Path) -> None:
    nvml = FakeNvml(gpus=1, processes={0: [(4242, GIB)]})
    sampler = host_sampler(tmp_path, None, nvml)
    sampler.tick()  # opens the NVML session and reads which processes use which GPU
    start = time.time() + 60
    for second in range(11):
        nvml.energy_mj = 1_000_000 + 250_000 * second  # 250 W
        sampler.record_energy(at=start + second)
    meter = HostEnergy(sampler.energy)
    assert meter.devices_for(pids=[4242]) == {"gpu:0"}
    assert meter.devices_for(pids=[1, None]) == frozenset()
    span = Span(start + 2, start + 6, meter.devices_for(pids=[4242]))
    assert measured_energy_uj(meter, span, []) == 1_000_000_000  # 4 s × 250 W = 1 kJ


def test_without_nvml_there_are_no_gpu_counters(tmp_path: Path) -> None:
    sampler = host_sampler(tmp_path, None, FakeNvml(init_error=NVMLError_LibraryNotFound))
    sampler.tick()
    sampler.record_energy()
    assert sampler.energy.devices == frozenset()
