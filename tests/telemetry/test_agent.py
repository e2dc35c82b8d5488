"""Scale-out mode: `manage.py telemetry_agent` samples; web processes only forward and ask."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from django.core.management import call_command

from opsdash.telemetry import services
from opsdash.telemetry.management.commands.telemetry_agent import Command
from tests.telemetry.conftest import telemetry_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def test_pages_get_the_agents_history_and_frames_and_scripts_its_snapshot(operator, settings):
    settings.TELEMETRY_EMBEDDED = False  # this process samples nothing itself
    # Long enough for any machine; the test ends it when it is done, not the clock.
    agent = asyncio.create_task(Command().serve(60.0, handle_signals=False))
    # Until the agent has sampled three frames (a loaded machine may take longer than usual).
    deadline = time.monotonic() + 10
    while True:
        answers = await services.ask_agents("history", first_only=True)
        if answers and len(json.loads(answers[0])["frames"]) >= 3:
            break
        assert time.monotonic() < deadline, "the agent did not sample three frames"
        await asyncio.sleep(0.05)

    [latest] = await services.ask_agents("latest", first_only=True)
    ws = await telemetry_socket(operator)
    assert (await ws.connect())[0]
    history = json.loads(await ws.receive_from(timeout=3))
    await ws.send_json_to({"type": "ack"})
    frame = json.loads(await ws.receive_from(timeout=3))
    await ws.disconnect()
    agent.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agent

    assert json.loads(latest)["type"] == "frame"
    assert history["type"] == "history" and len(history["frames"]) >= 3
    assert frame["type"] == "frame" and frame["host"] == "testhost"


async def test_with_no_agent_running_the_snapshot_says_so(settings):
    settings.TELEMETRY_EMBEDDED = False
    assert await services.ask_agents("latest") == []


def test_the_command_runs_for_the_time_it_is_given(capsys):
    call_command("telemetry_agent", "--seconds", "0.5")
    assert "telemetry agent for testhost" in capsys.readouterr().out
