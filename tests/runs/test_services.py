"""The run path itself: a cancelled caller still leaves a finalized run."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.services import RunRequest, execute_run, start_run

pytestmark = pytest.mark.django_db(transaction=True)


async def settled(pk: int, timeout: float = 10.0) -> Run:
    """The run once it has left ``running``, read again until then (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while (run := await Run.objects.aget(pk=pk)).status == RunStatus.RUNNING:
        assert time.monotonic() < deadline, "the run was never finalized"
        await asyncio.sleep(0.05)
    return run


async def test_cancelling_the_caller_records_the_run_as_cancelled_with_its_text(
    tiny_model, operator
):
    run = await sync_to_async(start_run)(
        request=RunRequest(model_id=tiny_model.pk, prompt="hello", params={"max_tokens": 5000}),
        user=operator,
        source=RunSource.API,
    )
    first_token = asyncio.Event()

    async def on_token(text: str) -> None:
        # The caller is still handling its first token when it goes away, so the run cannot
        # have finished by itself first, however fast this CPU writes the rest.
        first_token.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(execute_run(run, on_token=on_token))
    await asyncio.wait_for(first_token.wait(), timeout=60)
    task.cancel()  # what Django does to an async view when the HTTP client goes away
    with pytest.raises(asyncio.CancelledError):
        await task

    run = await settled(run.pk)  # the shielded finalize completes on its own
    assert run.status == RunStatus.CANCELLED
    assert run.output and run.finished_at is not None
