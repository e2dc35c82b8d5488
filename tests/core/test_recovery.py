"""Startup recovery settles work whose process is gone, a reused pid included, in all three
places work is recorded: runs, suite runs and installs."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from opsdash.catalog import services as catalog
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core.processes import current_process
from opsdash.playground import suites
from opsdash.playground.models import SuiteRun, SuiteRunStatus, SuiteTrigger
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.services import RunRequest, mark_interrupted_runs, start_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def reused_pid() -> Iterator[tuple[int, float]]:
    """A live pid of this host, with a start time that is not its process's: a reused pid."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid, psutil.Process(child.pid).create_time() - 120
    finally:
        child.kill()
        child.wait()


def _ready_model() -> LocalModel:
    return LocalModel.objects.create(
        name="m", slug="m", source_kind=SourceKind.PATH, source_ref="/x", status=ModelStatus.READY
    )


def _run(model: LocalModel) -> Run:
    request = RunRequest(model_id=model.pk, prompt="hello")
    return start_run(request=request, user=None, source=RunSource.API)


def test_a_run_whose_pid_now_belongs_to_another_process_is_marked_interrupted(reused_pid):
    pid, started_at = reused_pid
    run = _run(_ready_model())
    Run.objects.filter(pk=run.pk).update(pid=pid, pid_started_at=started_at)

    assert mark_interrupted_runs() == 1

    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED
    assert run.error == "The server stopped while this run was generating."


def test_a_run_of_this_very_process_is_left_running():
    run = _run(_ready_model())
    me = current_process()
    assert (run.host, run.pid, run.pid_started_at) == (me.host, me.pid, me.started_at)

    assert mark_interrupted_runs() == 0

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


def test_a_run_of_another_live_process_is_left_running(reused_pid):
    pid, _ = reused_pid
    run = _run(_ready_model())
    Run.objects.filter(pk=run.pk).update(pid=pid, pid_started_at=psutil.Process(pid).create_time())

    assert mark_interrupted_runs() == 0
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


def test_a_suite_run_whose_pid_was_reused_is_settled_and_a_live_one_kept(reused_pid):
    from tests.playground.test_suites import PASSING, make_suite

    pid, started_at = reused_pid
    model, suite = _ready_model(), make_suite(PASSING)
    manual = SuiteTrigger.MANUAL
    orphan = suites.start_suite_run(suite=suite, model=model, user=None, trigger=manual)
    SuiteRun.objects.filter(pk=orphan.pk).update(pid=pid, pid_started_at=started_at)
    mine = suites.start_suite_run(suite=suite, model=model, user=None, trigger=manual)

    assert suites.mark_interrupted_suite_runs() == 1

    orphan.refresh_from_db()
    mine.refresh_from_db()
    assert orphan.status == SuiteRunStatus.ERROR
    assert orphan.error == "The server stopped while this suite was running."
    assert mine.status == SuiteRunStatus.RUNNING


def test_an_install_whose_pid_was_reused_is_failed_and_this_processs_own_is_kept(reused_pid):
    pid, started_at = reused_pid
    me = current_process()

    def installing(slug: str, pid: int, started_at: float | None) -> LocalModel:
        return LocalModel.objects.create(
            name=slug,
            slug=slug,
            source_kind=SourceKind.URL,
            source_ref="http://example.invalid/x",
            install_host=socket.gethostname(),
            install_pid=pid,
            install_pid_started_at=started_at,
        )

    orphan = installing("orphan", pid, started_at)
    mine = installing("mine", me.pid, me.started_at)

    assert catalog.recover_interrupted_installs() == 1

    orphan.refresh_from_db()
    mine.refresh_from_db()
    assert orphan.status == ModelStatus.FAILED and "interrupted" in orphan.error
    assert mine.status == ModelStatus.INSTALLING
