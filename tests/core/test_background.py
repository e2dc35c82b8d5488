"""One registry of background services; a pool per purpose, so a long suite never blocks an
install."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings

from opsdash.catalog import jobs
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core import background
from opsdash.playground import suites
from opsdash.playground.models import SuiteRun, SuiteRunStatus
from opsdash.runs import runtime
from opsdash.telemetry import sampler


def _wait_until(predicate, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def blocked_lane():  # type: ignore[no-untyped-def]
    """Fill a lane's every worker with a job that waits until the test ends."""
    release = threading.Event()
    started: list[jobs.Lane] = []

    def block(lane: jobs.Lane) -> None:
        for _ in range(int(settings.INSTALL_WORKERS)):
            jobs.submit(lambda: (started.append(lane), release.wait(30)), lane=lane)
        assert _wait_until(lambda: started.count(lane) == int(settings.INSTALL_WORKERS))

    yield block
    release.set()
    assert jobs.drain(timeout=30)


def test_each_app_registers_its_background_service_in_start_and_stop_order():
    assert background.names() == [
        "job pools",
        "model supervisor",
        "telemetry sampler",
        "fleet telemetry",
        "batch worker",
        "fleet health sweep",
        "notification sender",
    ]


def test_an_install_job_runs_while_every_suite_worker_is_busy(blocked_lane):  # type: ignore[no-untyped-def]
    blocked_lane(jobs.Lane.SUITE)
    done = threading.Event()

    jobs.submit(done.set)  # an install's lane

    assert done.wait(10), "the install waited behind the suites"


@pytest.mark.django_db(transaction=True)
def test_a_suite_run_starts_while_every_install_worker_is_busy(blocked_lane):  # type: ignore[no-untyped-def]
    model = LocalModel.objects.create(
        name="gone",
        slug="gone",
        status=ModelStatus.READY,
        source_kind=SourceKind.PATH,
        source_ref="/nowhere/gone.gguf",
    )
    suite = suites.create_suite(
        name="Smoke",
        cases=[suites.CaseSpec(name="says hi", prompt="Hi")],
        user=None,
        auto_run_after_install=True,
    )
    blocked_lane(jobs.Lane.LOCAL)
    blocked_lane(jobs.Lane.DOWNLOAD)

    suites.run_suites_after_install(model_id=model.pk)

    def settled() -> bool:
        return SuiteRun.objects.filter(suite=suite).exclude(status=SuiteRunStatus.RUNNING).exists()

    assert _wait_until(settled), "the suite waited behind the installs"


def test_reset_after_fork_forgets_every_services_threads():
    jobs.submit(lambda: None)
    runtime.get_supervisor()
    assert jobs._executors and runtime._supervisor is not None

    background.reset_after_fork()

    assert not jobs._executors and runtime._supervisor is None
    assert sampler.current_sampler() is None


async def test_stop_all_stops_every_service_and_a_failing_one_does_not_stop_the_rest():
    stopped: list[str] = []

    def broken() -> None:
        raise RuntimeError("stuck")

    async def later() -> None:
        stopped.append("async")

    with background.services.override(
        background.BackgroundService("a", start=lambda: None, stop=broken, reset_after_fork=list),
        background.BackgroundService("b", start=lambda: None, stop=later, reset_after_fork=list),
    ):
        await background.stop_all()

    assert stopped == ["async"]
