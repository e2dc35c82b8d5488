"""Many requests in flight on one runner at once: routed by id, crashes, priorities, limits."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference.backends.base import GenerationParams
from inference.runtime.supervisor import (
    DoneRunEvent,
    GenerateRequest,
    Priority,
    RunEvent,
    RunnerCrashed,
    Supervisor,
    SupervisorBusy,
)
from tests.inference.test_supervisor import GIB, collect, endless, ongoing, prompt, tiny, until


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(memory_budget_bytes=8 * GIB, idle_unload_seconds=0, queue_depth=2)
    yield supervisor
    await supervisor.close()


def seeded(text: str, max_tokens: int, seed: int) -> GenerateRequest:
    params = GenerationParams(max_tokens=max_tokens, temperature=0.8, seed=seed)
    return GenerateRequest(params, prompt=text)


async def events_of(stream: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [event async for event in stream]


async def test_two_requests_to_one_serial_model_each_get_their_own_events(
    supervisor: Supervisor, tiny_ggml_path: Path
) -> None:
    spec = tiny(tiny_ggml_path, model_id=3)
    first, second = seeded("the cat", 6, seed=1), seeded("a dog ran", 11, seed=2)
    alone = [await collect(supervisor.generate(spec, r)) for r in (first, second)]

    together = await asyncio.gather(
        collect(supervisor.generate(spec, first)), collect(supervisor.generate(spec, second))
    )
    # Each answer is the one it gets alone: no token of one reached the other.
    for (text, done), (alone_text, alone_done) in zip(together, alone, strict=True):
        assert text == alone_text
        assert (done["completion_tokens"], done["prompt_tokens"]) == (
            alone_done["completion_tokens"],
            alone_done["prompt_tokens"],
        )
    assert [done["completion_tokens"] for _, done in together] == [6, 11]
    [status] = supervisor.status()
    assert (status.backend, status.parallel_sequences) == ("ctransformers", 1)
    assert (status.state, status.queue_length, status.active_sequences) == ("idle", 0, 0)


async def test_a_killed_runner_ends_every_request_in_flight_with_runner_crashed(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    spec = endless(tiny_long_gguf_path)
    running = supervisor.generate(spec, ongoing())
    await anext(running)
    waiting = asyncio.create_task(collect(supervisor.generate(spec, ongoing())))
    await until(lambda: [s.active_sequences for s in supervisor.status()] == [2])
    os.kill(supervisor.status()[0].pid, signal.SIGKILL)

    with pytest.raises(RunnerCrashed, match="SIGKILL"):
        async for _ in running:
            pass
    with pytest.raises(RunnerCrashed, match="SIGKILL"):
        await asyncio.wait_for(waiting, 10)
    assert supervisor.status() == []


async def test_a_batch_request_reaches_the_runner_at_batch_priority(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    spec = tiny(tiny_gguf_path)
    interactive = await events_of(supervisor.generate(spec, prompt("hello", 8)))
    batch = await events_of(supervisor.generate(spec, prompt("hello", 8), priority="batch"))
    # The runner holds a batch request's text and sends it whole just before its done.
    assert len([e for e in interactive if e["type"] == "token"]) > 1
    *tokens, done = batch
    assert len(tokens) == 1 and tokens[0]["type"] == "token"
    assert tokens[0]["text"] == "".join(e["text"] for e in interactive if e["type"] == "token")
    assert done["type"] == "done" and done["completion_tokens"] == 8


async def test_only_interactive_requests_count_against_the_queue_limit(
    tiny_long_gguf_path: Path,
) -> None:
    # queue_depth 1 beyond the one sequence ``endless`` decodes: two interactive in all.
    supervisor = Supervisor(memory_budget_bytes=8 * GIB, idle_unload_seconds=0, queue_depth=1)
    spec = endless(tiny_long_gguf_path)
    cancel = asyncio.Event()

    def start(priority: Priority) -> asyncio.Task[tuple[str, DoneRunEvent]]:
        stream = supervisor.generate(spec, ongoing(), cancel_event=cancel, priority=priority)
        return asyncio.create_task(collect(stream))

    try:
        batch = [start("batch"), start("batch")]
        await until(lambda: [s.queue_length for s in supervisor.status()] == [2], 30)
        interactive = [start("interactive"), start("interactive")]
        await until(lambda: [s.queue_length for s in supervisor.status()] == [4])
        started = time.monotonic()
        with pytest.raises(SupervisorBusy, match="it already has 2 request"):
            await collect(supervisor.generate(spec, ongoing(3)))
        assert time.monotonic() - started < 0.5
        batch.append(start("batch"))  # never refused as busy
        await until(lambda: [s.queue_length for s in supervisor.status()] == [5])
        assert not any(task.done() for task in batch + interactive)
        cancel.set()
        ended = await asyncio.wait_for(asyncio.gather(*batch, *interactive), 10)
        assert {done["finish_reason"] for _, done in ended} == {"cancelled"}
    finally:
        await supervisor.close()


async def test_a_new_spec_waits_for_the_requests_on_the_old_runner(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    old = endless(tiny_long_gguf_path)
    stream = supervisor.generate(old, ongoing())
    await anext(stream)
    pid = supervisor.status()[0].pid
    reload = asyncio.create_task(
        supervisor.load(dataclasses.replace(old, context_length=old.context_length // 2))
    )
    await asyncio.sleep(0.5)
    # The running answer is not cut short by the reload: it goes on, on the same runner.
    assert not reload.done()
    assert (await anext(stream))["type"] == "token"
    assert supervisor.status()[0].pid == pid
    await stream.aclose()
    status = await asyncio.wait_for(reload, 30)
    assert status.pid != pid and status.context_length == old.context_length // 2


async def test_counting_tokens_does_not_wait_behind_a_generation(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    spec = endless(tiny_long_gguf_path)
    stream = supervisor.generate(spec, ongoing())
    await anext(stream)
    started = time.monotonic()
    count = await asyncio.wait_for(supervisor.count_tokens(spec, prompt="hello world"), 5)
    assert count >= 2 and time.monotonic() - started < 2.0
    assert (await anext(stream))["type"] == "token"  # the answer was not disturbed
    await stream.aclose()


async def test_four_generations_decode_together_on_a_model_with_four_sequences(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    spec = dataclasses.replace(endless(tiny_long_gguf_path), parallel_sequences=4)
    loaded = await supervisor.load(spec)
    assert loaded.parallel_sequences == 4
    streams = [supervisor.generate(spec, ongoing()) for _ in range(4)]
    firsts = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 30)
    assert all(event["type"] == "token" for event in firsts)
    # Every one of them is under way at once: none waits for another to end.
    [status] = supervisor.status()
    assert (status.active_sequences, status.queue_length, status.state) == (4, 4, "busy")
    # Ending one leaves the other three decoding.
    await streams[0].aclose()
    for stream in streams[1:]:
        assert (await asyncio.wait_for(anext(stream), 5))["type"] == "token"
    await until(lambda: supervisor.status()[0].active_sequences == 3)
    for stream in streams[1:]:
        await stream.aclose()
    assert supervisor.status()[0].active_sequences == 0
