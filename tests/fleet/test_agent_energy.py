"""A fleet node prices its generations as the embedded mode prices a run.

The agent's ``done`` event carries the energy its own sampler's record gives for the
generation (``Generations.energy_fields``); the embedded path prices a finished run from the
same record (``savings.services.run_energy``). Same inputs (the counters, the window, the
runner's pid and CPU time, one other generation still running) must give the same figures.
The counters are a powercap tree written to a temporary folder (this machine has no readable
RAPL) read by the real RAPL probe; NVML is the fake one.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from inference.runtime.supervisor import Supervisor
from opsdash.fleet.agent_generation import Generations, NodeState
from opsdash.fleet.agent_store import ModelStore
from opsdash.runs.models import Run, RunStatus
from opsdash.savings.energy import estimated_energy
from opsdash.savings.services import EnergyReading, run_energy
from opsdash.telemetry import energy
from tests.factories import local_model, started_run, workflow
from tests.savings.test_energy import FakePowercap, _sample_every_second, host_sampler
from tests.telemetry.fake_nvml import FakeNvml

DONE = {"type": "done", "pid": 4242, "cpu_seconds": 0.75, "total_ms": 10_000.0}


def generations(tmp_path: Path, sampler: Any) -> Generations:
    return Generations(
        name="gpu01",
        store=ModelStore(models_dir=tmp_path / "models", data_dir=tmp_path / "data"),
        supervisor=Supervisor(memory_budget_bytes=1 << 30, idle_unload_seconds=60, queue_depth=4),
        state=NodeState(),
        emit=lambda *args, **kwargs: None,
        queue_depth=4,
        sampler=lambda: sampler,
    )


def embedded_reading(start: datetime, end: datetime, sampler: Any, others: list[datetime]) -> Any:
    """What the embedded mode records for a run over the same window, with ``others`` still
    running beside it."""
    flow, model = workflow("notes"), local_model()
    for other in others:
        started_run(flow, model, started_at=other)  # still running
    run = started_run(flow, model, started_at=start)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.OK,
        finished_at=end,
        runner_pid=DONE["pid"],
        cpu_seconds=DONE["cpu_seconds"],
        total_ms=DONE["total_ms"],
    )
    run.refresh_from_db()
    energy.use_sampler(sampler)
    try:
        return run_energy(run)
    finally:
        energy.use_sampler()


def assert_same(fields: dict[str, Any], reading: EnergyReading) -> None:
    assert fields["energy_source"] == reading.source
    # The hub stores round(joules × 1000) mJ: exactly the embedded mode's millijoules.
    assert round(fields["energy_joules"] * 1000) == reading.energy_mj
    assert fields["energy_basis"] == reading.basis
    assert fields["energy_devices"] == reading.devices


@pytest.mark.django_db
def test_measured_energy_on_a_node_equals_the_embedded_figure_shared_by_overlap_alike(
    tmp_path, settings
):
    settings.FLEET = False  # the embedded path measures only outside fleet mode
    rapl = FakePowercap(tmp_path / "powercap")
    sampler = host_sampler(tmp_path, rapl, FakeNvml(gpus=0))
    t0 = timezone.now().replace(microsecond=0) - timedelta(seconds=60)
    _sample_every_second(sampler, rapl, t0.timestamp(), 20)  # 10 W, wrapping twice
    start, end = t0 + timedelta(seconds=2), t0 + timedelta(seconds=12)
    other = t0 + timedelta(seconds=5)

    node = generations(tmp_path, sampler)
    node.spans.running["other"] = other.timestamp()  # another generation, still running
    fields = asyncio.run(node.energy_fields("this", start.timestamp(), end.timestamp(), dict(DONE)))
    reading = embedded_reading(start, end, sampler, [other])

    assert_same(fields, reading)
    assert reading.source == "measured"
    # 2–5 s alone (30 J), 5–12 s shared with the other one (70 J / 2): 65 J.
    assert reading.energy_mj == 65_000
    assert "shared with 1 overlapping run" in reading.basis
    assert reading.devices == ["cpu:intel-rapl:0"]
    # A measured generation is remembered: the next one overlapping it shares with it.
    later = asyncio.run(
        node.energy_fields("next", start.timestamp() + 5, end.timestamp() + 5, dict(DONE))
    )
    assert later["energy_source"] == "measured"
    assert "shared with 2 overlapping run(s)" in later["energy_basis"]


@pytest.mark.django_db
def test_a_node_without_counters_estimates_from_cpu_time_as_the_embedded_mode_does(
    tmp_path, settings
):
    settings.FLEET = False
    start = timezone.now() - timedelta(seconds=30)
    end = start + timedelta(seconds=10)
    fields = asyncio.run(
        generations(tmp_path, None).energy_fields(
            "this", start.timestamp(), end.timestamp(), dict(DONE)
        )
    )
    reading = embedded_reading(start, end, None, [])
    assert_same(fields, reading)
    assert reading.source == "estimated"
    assert reading.energy_mj == estimated_energy(cpu_seconds=0.75, duration_seconds=10).energy_mj
    assert "0.750 CPU-seconds" in reading.basis
