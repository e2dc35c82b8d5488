"""The application's ASGI lifespan: startup settles interrupted work, shutdown ends every runner."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator

from opsdash.asgi import application
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.runtime import get_supervisor
from opsdash.runs.services import RunRequest, execute_run, start_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reused_pid() -> Iterator[tuple[int, float]]:
    """A live pid of this host recorded with a start time that is not its process's."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid, psutil.Process(child.pid).create_time() - 120
    finally:
        child.kill()
        child.wait()


async def _lifespan(communicator: ApplicationCommunicator, phase: str) -> str:
    await communicator.send_input({"type": f"lifespan.{phase}"})
    return str((await communicator.receive_output(timeout=30))["type"])


async def test_startup_settles_a_run_whose_pid_was_reused_and_shutdown_ends_the_runners(
    tiny_model,
    operator,
    reused_pid,
):
    request = RunRequest(model_id=tiny_model.pk, prompt="hello", params={"max_tokens": 2})
    orphan = await sync_to_async(start_run)(request=request, user=operator, source=RunSource.API)
    pid, started_at = reused_pid
    await Run.objects.filter(pk=orphan.pk).aupdate(pid=pid, pid_started_at=started_at)
    communicator = ApplicationCommunicator(application, {"type": "lifespan"})

    assert await _lifespan(communicator, "startup") == "lifespan.startup.complete"
    orphan = await Run.objects.aget(pk=orphan.pk)
    assert orphan.status == RunStatus.INTERRUPTED

    served = await sync_to_async(start_run)(request=request, user=operator, source=RunSource.API)
    assert (await execute_run(served)).status == RunStatus.OK
    runners = [psutil.Process(s.pid) for s in get_supervisor().status()]
    assert runners

    assert await _lifespan(communicator, "shutdown") == "lifespan.shutdown.complete"
    assert not [r.pid for r in runners if r.is_running() and r.status() != psutil.STATUS_ZOMBIE]
    await communicator.wait(timeout=5)
