"""A run cut short by a server shutdown is recorded ``interrupted``, never lost or ``cancelled``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async

from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.runtime import close_supervisor, get_supervisor
from opsdash.runs.services import SHUTDOWN_REASON, RunRequest, execute_run, start_run

pytestmark = pytest.mark.django_db(transaction=True)


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def _run(tiny_model, operator, max_tokens: int) -> Run:  # type: ignore[no-untyped-def]
    request = RunRequest(model_id=tiny_model.pk, prompt="hello", params={"max_tokens": max_tokens})
    return await sync_to_async(start_run)(request=request, user=operator, source=RunSource.API)


async def test_a_run_the_server_cancels_after_its_grace_is_recorded_interrupted(
    tiny_model, operator
):
    # The server's last resort: a request still running when its graceful-shutdown time is up
    # is cancelled, then lifespan shutdown closes the supervisor. Here the runner is frozen
    # (SIGSTOP) before the run starts, so the run is stuck by construction.
    await execute_run(await _run(tiny_model, operator, 1))  # loads the model
    supervisor = get_supervisor()
    (runner,) = supervisor.status()
    os.kill(runner.pid, signal.SIGSTOP)
    try:
        task = asyncio.create_task(execute_run(await _run(tiny_model, operator, 100)))

        async def generating() -> bool:
            return [s.state for s in supervisor.status()] == ["busy"]

        await _until(generating)
        supervisor.interrupt()  # what the stop signal does; the frozen runner cannot obey
        task.cancel()  # what uvicorn does after --timeout-graceful-shutdown
        await close_supervisor(grace=0.5)  # lifespan shutdown: the frozen runner is killed
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(runner.pid, signal.SIGKILL)

    run = await Run.objects.order_by("-pk").afirst()
    assert run is not None
    assert (run.status, run.error) == (RunStatus.INTERRUPTED, SHUTDOWN_REASON)


async def test_a_run_the_caller_stops_is_still_cancelled_during_normal_service(
    endless_model, operator
):
    cancel = asyncio.Event()
    first_token = asyncio.Event()

    async def on_token(text: str) -> None:
        first_token.set()
        cancel.set()

    # A model that never ends, asked for more tokens than its runner writes before the cancel
    # reaches it (the 256-token tiny model could finish first on a fast CPU).
    run = await _run(endless_model, operator, 100_000)
    run = await execute_run(run, on_token=on_token, cancel=cancel)

    assert first_token.is_set()
    assert (run.status, run.error) == (RunStatus.CANCELLED, "")
