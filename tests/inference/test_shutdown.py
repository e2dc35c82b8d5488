"""The supervisor's shutdown: generations in flight end with their text, every runner ends."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from inference.backends.base import GenerationParams
from inference.errors import InferenceError
from inference.runtime.supervisor import SHUT_DOWN, GenerateRequest, ModelSpec, Supervisor
from tests.inference.test_supervisor import collect

GIB = 2**30
#: The tiny llama never ends by itself (its logits keep ``</s>`` out), so with this context a
#: generation runs for minutes: long by construction, not by luck.
LONG_CONTEXT = 100_000


def long_running(path: Path) -> ModelSpec:
    return ModelSpec(
        model_id=7, path=str(path), backend="llama_cpp", context_length=LONG_CONTEXT, threads=1
    )


def endless() -> GenerateRequest:
    return GenerateRequest(GenerationParams(max_tokens=LONG_CONTEXT, temperature=0), prompt="hi")


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    instance = Supervisor(memory_budget_bytes=4 * GIB, idle_unload_seconds=0, queue_depth=4)
    yield instance
    await instance.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_interrupt_ends_a_generation_in_flight_with_its_text_so_far(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    events = supervisor.generate(long_running(tiny_gguf_path), endless())
    first = await anext(events)
    assert first["type"] == "token"
    (runner,) = supervisor.status()

    supervisor.interrupt()
    text, done = await collect(events)

    assert done["finish_reason"] == "cancelled"
    assert 0 < done["completion_tokens"] < LONG_CONTEXT and first["text"] + text
    assert supervisor.shutting_down
    await supervisor.close(grace=2)
    assert _gone(runner.pid)


async def test_a_request_after_interrupt_ends_at_once_without_starting_a_runner(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    await supervisor.load(long_running(tiny_gguf_path))
    supervisor.interrupt()
    other = ModelSpec(model_id=8, path=str(tiny_gguf_path), backend="llama_cpp", threads=1)

    text, done = await collect(supervisor.generate(other, endless()))

    assert (text, done["finish_reason"], done["completion_tokens"]) == ("", "cancelled", 0)
    assert [s.model_id for s in supervisor.status()] == [7]


async def test_close_kills_a_runner_that_does_not_stop_within_the_grace(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    events = supervisor.generate(long_running(tiny_gguf_path), endless())
    assert (await anext(events))["type"] == "token"
    (runner,) = supervisor.status()
    os.kill(runner.pid, signal.SIGSTOP)  # hung in native code: it will never read "shutdown"
    consumer = asyncio.ensure_future(collect(events))

    started = time.monotonic()
    await supervisor.close(grace=0.5)
    took = time.monotonic() - started

    assert _gone(runner.pid)
    assert took < 0.5 + 3, f"close took {took:.1f} s"
    with pytest.raises(InferenceError, match="shut down during this request"):
        await consumer


async def test_after_a_final_close_requests_are_refused_and_no_runner_starts(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    await supervisor.load(long_running(tiny_gguf_path))
    await supervisor.close(grace=2, final=True)

    with pytest.raises(InferenceError) as refused:
        await collect(supervisor.generate(long_running(tiny_gguf_path), endless()))

    assert refused.value.code == SHUT_DOWN
    assert supervisor.status() == []
