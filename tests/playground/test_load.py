"""Load and failure: many sessions at once, and a runner killed mid-generation."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from opsdash.runs.models import Run, RunStatus
from opsdash.runs.runtime import get_supervisor
from tests.playground.test_consumer import ENDLESS_TOKENS, collect, connected, next_not_status

pytestmark = pytest.mark.django_db(transaction=True)


async def one_session(user, model_id: int) -> dict:  # type: ignore[no-untyped-def]
    ws = await connected(user)
    ok, _ = await ws.connect()
    assert ok
    await ws.send_json_to(
        {"type": "run", "model": model_id, "prompt": "hello world", "params": {"max_tokens": 16}}
    )
    _, final = await collect(ws)
    await ws.disconnect()
    return final


async def test_twenty_concurrent_sessions_each_finish_or_hear_busy(operator, tiny_model):
    finals = await asyncio.wait_for(
        asyncio.gather(*(one_session(operator, tiny_model.pk) for _ in range(20))), timeout=180
    )
    outcomes = {"ok": 0, "busy": 0}
    for final in finals:
        assert final["type"] == "done", final
        if final["status"] == "ok":
            outcomes["ok"] += 1
        else:
            assert final["status"] == "error" and "busy" in final["error"].lower(), final
            outcomes["busy"] += 1
    assert outcomes["ok"] >= 1
    assert await Run.objects.acount() == 20, "every request has its run row"
    assert await Run.objects.filter(status=RunStatus.RUNNING).acount() == 0


async def test_a_runner_killed_mid_generation_fails_the_run_and_the_next_request_works(
    operator, endless_model
):
    ws = await connected(operator)
    await ws.connect()
    params = {"max_tokens": ENDLESS_TOKENS}
    await ws.send_json_to(
        {"type": "run", "model": endless_model.pk, "prompt": "hello", "params": params}
    )
    started = await ws.receive_json_from(timeout=30)
    assert (await next_not_status(ws))["type"] == "token"
    (status,) = get_supervisor().status()
    os.kill(status.pid, signal.SIGKILL)

    _, final = await collect(ws)
    assert final["status"] == "error"
    assert "SIGKILL" in final["error"], final["error"]
    run = await Run.objects.aget(pk=started["run"])
    assert run.status == RunStatus.ERROR and run.output, "the text so far is kept"

    # The server keeps serving, and the next request gets a fresh runner.
    await ws.send_json_to(
        {"type": "run", "model": endless_model.pk, "prompt": "hello", "params": {"max_tokens": 4}}
    )
    await ws.receive_json_from(timeout=30)
    _, again = await collect(ws)
    await ws.disconnect()
    assert again["status"] == "ok"
    (fresh,) = get_supervisor().status()
    assert fresh.pid != status.pid
