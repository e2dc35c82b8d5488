"""Under load and faults: clients that hang up, and more clients than the model takes."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest
from asgiref.sync import sync_to_async

from opsdash.runs.models import Run, RunStatus
from tests.gateway.conftest import LONG_ANSWER
from tests.gateway.rawhttp import OpenStream, hang_up_while_waiting

pytestmark = pytest.mark.django_db(transaction=True)


def finished(run_id: int, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while (run := Run.objects.get(pk=run_id)).status == RunStatus.RUNNING:
        assert time.monotonic() < deadline, "the run was never finalized"
        time.sleep(0.1)
    return run


@pytest.fixture
def one_at_a_time(settings) -> None:  # type: ignore[no-untyped-def]
    """The runner decodes one request at a time, so a second one waits (before the fork)."""
    settings.PARALLEL_SEQUENCES = 1


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_leaves_a_cancelled_run_with_its_text(
    one_at_a_time, gateway, endless_model
):
    stream = OpenStream(
        f"{gateway.base_url}/chat/completions",
        LONG_ANSWER | {"model": endless_model.slug},
        key=gateway.key,
    )
    assert stream.status == 200
    seen = ""
    for data in stream.events():
        seen += json.loads(data)["choices"][0]["delta"].get("content", "")
        if len(seen) > 40:
            break

    # A second client waits behind the first, gives up before its first token, and hangs up:
    # once its run is written (not after a guessed delay), so the run below is surely its own.
    def second_run() -> Run | None:
        return Run.objects.filter(pk__gt=stream.run_id).first()

    hang_up_while_waiting(
        f"{gateway.base_url}/completions",
        {"model": endless_model.slug, "prompt": "Once upon a time", "max_tokens": 50},
        key=gateway.key,
        until=lambda: second_run() is not None,
    )
    waiting = second_run()
    assert waiting is not None
    queued = finished(waiting.pk)
    assert queued.status == RunStatus.CANCELLED and queued.output == ""
    assert Run.objects.get(pk=stream.run_id).status == RunStatus.RUNNING, "the first goes on"

    stream.close()

    run = finished(stream.run_id)
    assert run.status == RunStatus.CANCELLED
    assert run.output.startswith(seen), "the run keeps the text the client saw, and what followed"
    assert run.completion_tokens and 0 < run.completion_tokens < LONG_ANSWER["max_tokens"]
    assert run.prompt_tokens and run.prompt_tokens > 5

    # The model is free again at once: the next call is served, not refused as busy.
    again = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
    reply = again.chat.completions.create(
        model=endless_model.slug, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"


async def one_streaming_client(aclient: openai.AsyncOpenAI, model: str, n: int) -> str:
    try:
        stream = await aclient.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"hello {n}"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens == 16
        return "ok"
    except openai.RateLimitError as exc:
        assert exc.status_code == 429 and exc.response.headers["retry-after"]
        return "busy"


async def test_32_concurrent_streaming_clients_each_finish_or_hear_429(gateway, tiny_model):
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=120
    ) as aclient:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one_streaming_client(aclient, tiny_model.slug, n) for n in range(32))),
            timeout=180,
        )
    assert set(outcomes) <= {"ok", "busy"} and outcomes.count("ok") >= 1, outcomes
    assert await Run.objects.acount() == 32, "every request has its run row"
    statuses = await sync_to_async(lambda: sorted(Run.objects.values_list("status", flat=True)))()
    assert statuses.count(RunStatus.OK) == outcomes.count("ok")
    assert statuses.count(RunStatus.ERROR) == outcomes.count("busy")
    assert await Run.objects.filter(status=RunStatus.RUNNING).acount() == 0
