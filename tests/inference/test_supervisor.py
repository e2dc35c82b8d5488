"""The supervisor with real runner processes: queues, cancelling, crashes, the memory budget."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from inference.backends.base import GenerationParams
from inference.errors import BackendError
from inference.runtime.process import describe_exit
from inference.runtime.supervisor import (
    DoneRunEvent,
    GenerateRequest,
    MemoryBudgetExceeded,
    ModelSpec,
    RunEvent,
    RunnerCrashed,
    Supervisor,
    SupervisorBusy,
)
from tests.inference.conftest import RunPython
from tests.inference.peers import llama_cpp_peer

GIB = 2**30
#: The context the never-ending tiny model is loaded with: 8 MiB of KV cache, and tens of
#: seconds of generation on any CPU before ``ONGOING_TOKENS`` could fill it.
ENDLESS_CONTEXT = 65_536
ONGOING_TOKENS = 60_000


def smollm2(path: Path, model_id: int = 1, estimated_bytes: int = 0) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        path=str(path),
        backend="llama_cpp",
        context_length=512,
        threads=1,
        estimated_bytes=estimated_bytes,
    )


def tiny(path: Path, model_id: int = 2, estimated_bytes: int = 0, **fields: int) -> ModelSpec:
    backend = "llama_cpp" if path.suffix == ".gguf" else "ctransformers"
    model_type = None if path.suffix == ".gguf" else "gpt2"
    return ModelSpec(
        model_id=model_id,
        path=str(path),
        backend=backend,
        model_type=model_type,
        threads=1,
        estimated_bytes=estimated_bytes,
        **({"context_length": 128} | fields),
    )


def endless(path: Path, model_id: int = 1, estimated_bytes: int = 0) -> ModelSpec:
    """The tiny llama that never writes </s> (``tiny_long_gguf_path``), in a large context."""
    return ModelSpec(
        model_id=model_id,
        path=str(path),
        backend="llama_cpp",
        context_length=ENDLESS_CONTEXT,
        threads=1,
        estimated_bytes=estimated_bytes,
    )


def prompt(text: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(GenerationParams(max_tokens=max_tokens, temperature=0), prompt=text)


def ongoing(max_tokens: int = ONGOING_TOKENS) -> GenerateRequest:
    """A request ``endless`` answers until it is stopped, by construction: the model has no
    end token, and its context holds more tokens than any test waits for."""
    return prompt("hello world", max_tokens)


async def collect(events: AsyncIterator[RunEvent]) -> tuple[str, DoneRunEvent]:
    text = []
    async for event in events:
        if event["type"] == "token":
            text.append(event["text"])
        else:
            return "".join(text), event
    raise AssertionError("the stream ended without a done event")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


def runner_pids() -> set[int]:
    """Live runner processes of this test process. Compare with a set taken at the start of
    the test: a shared supervisor from another test module may hold runners of its own."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            runner = "inference.runtime.runner" in child.cmdline()
            if child.status() != psutil.STATUS_ZOMBIE and runner:
                pids.add(child.pid)
    return pids


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(memory_budget_bytes=8 * GIB, idle_unload_seconds=0, queue_depth=2)
    yield supervisor
    await supervisor.close()


# --- generating ------------------------------------------------------------------------------


async def test_it_streams_tokens_then_one_done_with_counts_and_timings(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    events = [e async for e in supervisor.generate(tiny(tiny_gguf_path), prompt("hello", 8))]
    *tokens, done = events
    assert tokens and all(e["type"] == "token" and e["text"] for e in tokens)
    assert done["type"] == "done"
    assert (done["finish_reason"], done["completion_tokens"]) == ("length", 8)
    assert done["prompt_tokens"] >= 2
    assert done["ttft_ms"] is not None and 0 < done["ttft_ms"] <= done["total_ms"]
    assert done["tokens_per_second"] is not None and done["tokens_per_second"] > 0
    assert done["load_ms"] > 0  # this request started the runner

    _, again = await collect(supervisor.generate(tiny(tiny_gguf_path), prompt("hello", 2)))
    assert again["load_ms"] == 0  # and this one found it loaded


async def test_chat_messages_go_through_the_models_chat_template(
    supervisor: Supervisor, smollm2_path: Path, run_python: RunPython
) -> None:
    hi = [{"role": "user", "content": "hi"}]
    params = GenerationParams(max_tokens=20, temperature=0)
    # The peer: llama-cpp-python itself, its chat formatter over SmolLM2's own template.
    peer = llama_cpp_peer(run_python, smollm2_path, n_ctx=512, messages=hi, params=params)
    assert peer["prompt"].startswith("<|im_start|>system\n")  # the template adds a system turn

    request = GenerateRequest(params, messages=hi)
    text, done = await collect(supervisor.generate(smollm2(smollm2_path), request))
    assert text == peer["text"]
    assert (done["finish_reason"], done["prompt_tokens"], done["completion_tokens"]) == (
        peer["finish_reason"],
        peer["prompt_tokens"],
        peer["completion_tokens"],
    )
    spec = smollm2(smollm2_path)
    assert await supervisor.count_tokens(spec, messages=hi) == peer["prompt_tokens"]
    assert await supervisor.count_tokens(spec, prompt=peer["prompt"]) == peer["prompt_tokens"]
    assert await supervisor.count_tokens(smollm2(smollm2_path), prompt="hi") == 1


async def test_a_request_with_both_a_prompt_and_messages_is_refused_with_a_sentence() -> None:
    with pytest.raises(BackendError, match="Give either a prompt or chat messages"):
        GenerateRequest(GenerationParams(), prompt="hi", messages=[{"role": "user", "content": ""}])


# --- cancelling ------------------------------------------------------------------------------


async def test_closing_the_stream_early_cancels_and_keeps_the_model_loaded(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    stream = supervisor.generate(endless(tiny_long_gguf_path), ongoing())
    for _ in range(3):
        assert (await anext(stream))["type"] == "token"
    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 1.0  # it stopped, not ran on to the tokens asked for
    [status] = supervisor.status()
    assert (status.state, status.queue_length) == ("idle", 0)

    _, done = await collect(supervisor.generate(endless(tiny_long_gguf_path), ongoing(3)))
    assert (done["finish_reason"], done["completion_tokens"], done["load_ms"]) == ("length", 3, 0)
    assert supervisor.status()[0].pid == status.pid


async def test_a_cancel_event_ends_with_a_cancelled_done_and_the_counts_so_far(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    spec, cancel = endless(tiny_long_gguf_path), asyncio.Event()
    seen = 0
    async for event in supervisor.generate(spec, ongoing(), cancel_event=cancel):
        if event["type"] == "token":
            seen += 1
            if seen == 3:
                cancel.set()
        else:
            done = event
    assert done["finish_reason"] == "cancelled"
    # Every token generated before the runner saw the cancel still reaches the caller, and
    # the count says so; the model writes thousands a second, so that is more than three.
    assert 3 <= done["completion_tokens"] == seen < ONGOING_TOKENS
    assert done["prompt_tokens"] == await supervisor.count_tokens(spec, prompt="hello world")


async def test_cancelling_the_consuming_task_frees_the_model_for_the_next_request(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    first_token = asyncio.Event()

    async def consume() -> None:
        async for _ in supervisor.generate(endless(tiny_long_gguf_path), ongoing()):
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 30)
    pid = supervisor.status()[0].pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    started = time.monotonic()
    _, done = await collect(supervisor.generate(endless(tiny_long_gguf_path), ongoing(2)))
    assert time.monotonic() - started < 2.0  # it did not wait for the tokens asked before
    assert done["completion_tokens"] == 2
    assert supervisor.status()[0].pid == pid


async def test_a_request_cancelled_while_it_waits_in_the_queue_ends_at_once(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    spec = endless(tiny_long_gguf_path)
    running = supervisor.generate(spec, ongoing())
    await anext(running)
    cancel = asyncio.Event()
    waiting = asyncio.create_task(
        collect(supervisor.generate(spec, ongoing(), cancel_event=cancel))
    )
    await until(lambda: [s.queue_length for s in supervisor.status()] == [2])
    cancel.set()
    text, done = await asyncio.wait_for(waiting, 1.0)  # not after the answer ahead of it
    assert (text, done["finish_reason"], done["completion_tokens"]) == ("", "cancelled", 0)
    assert supervisor.status()[0].queue_length == 1
    await running.aclose()


# --- queues and concurrency ------------------------------------------------------------------


async def test_two_models_generate_at_the_same_time(
    supervisor: Supervisor, tiny_long_gguf_path: Path, tiny_gguf_path: Path
) -> None:
    long = supervisor.generate(endless(tiny_long_gguf_path), ongoing())
    assert (await anext(long))["type"] == "token"
    # The tiny model answers in full while the endless one is in the middle of its answer.
    _, tiny_done = await collect(supervisor.generate(tiny(tiny_gguf_path), prompt("hi", 5)))
    assert tiny_done["completion_tokens"] == 5
    states = {s.model_id: s.state for s in supervisor.status()}
    assert states == {1: "busy", 2: "idle"}
    assert len({s.pid for s in supervisor.status()}) == 2
    assert (await anext(long))["type"] == "token"  # and the long answer goes on
    await long.aclose()


async def test_requests_beyond_the_parallel_sequences_are_served_one_after_another_in_order(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    # ``endless`` decodes one sequence at a time (parallel_sequences 1): both requests are
    # sent to the runner at once, and it keeps the second waiting until the first is done.
    order: list[str] = []

    async def run(label: str, request: GenerateRequest) -> DoneRunEvent:
        async for event in supervisor.generate(endless(tiny_long_gguf_path), request):
            order.append(label)
            if event["type"] == "done":
                return event
        raise AssertionError("no done event")

    # The first answer is long enough (a second or more) for the second request to queue.
    first = asyncio.create_task(run("a", ongoing(3000)))
    second = asyncio.create_task(run("b", prompt("hello", 3)))
    await until(lambda: [s.queue_length for s in supervisor.status()] == [2])
    first_done, second_done = await asyncio.gather(first, second)
    assert "".join(order) == "a" * order.count("a") + "b" * order.count("b")
    # It waited in the runner, so its wait is in its time to first token.
    waited = second_done["queue_ms"] + (second_done["ttft_ms"] or 0)
    assert waited >= first_done["total_ms"] * 0.9


async def test_a_full_queue_raises_supervisor_busy_at_once(tiny_long_gguf_path: Path) -> None:
    # queue_depth 1 beyond the one sequence ``endless`` decodes at once: two requests in all.
    supervisor = Supervisor(memory_budget_bytes=8 * GIB, idle_unload_seconds=0, queue_depth=1)
    spec = endless(tiny_long_gguf_path)
    try:
        running = supervisor.generate(spec, ongoing())
        await anext(running)
        waiting = asyncio.create_task(collect(supervisor.generate(spec, ongoing(3))))
        await until(lambda: [s.queue_length for s in supervisor.status()] == [2])
        started = time.monotonic()
        with pytest.raises(SupervisorBusy) as raised:
            await collect(supervisor.generate(spec, ongoing(3)))
        assert time.monotonic() - started < 0.5
        assert raised.value.reason == (
            "The model is busy: it already has 2 request(s) running or waiting, as many as it "
            "takes at once; try again in a moment."
        )
        await running.aclose()
        _, waited = await waiting
        assert waited["completion_tokens"] == 3  # the one waiting ran once the first ended
        _, done = await collect(supervisor.generate(spec, ongoing(2)))
        assert done["completion_tokens"] == 2  # a slot is free again
    finally:
        await supervisor.close()


# --- crashes ---------------------------------------------------------------------------------


async def test_a_killed_runner_raises_runner_crashed_and_the_next_request_starts_afresh(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    stream = supervisor.generate(endless(tiny_long_gguf_path), ongoing())
    await anext(stream)
    [status] = supervisor.status()
    os.kill(status.pid, signal.SIGKILL)
    with pytest.raises(RunnerCrashed) as crashed:
        async for _ in stream:
            pass
    assert crashed.value.reason == (
        "The model process died (SIGKILL — possibly out of memory) while generating."
    )
    assert supervisor.status() == []

    _, done = await collect(supervisor.generate(endless(tiny_long_gguf_path), ongoing(2)))
    assert done["completion_tokens"] == 2
    assert done["load_ms"] > 0
    assert supervisor.status()[0].pid != status.pid


def test_a_crash_reason_names_the_signal_or_the_exit_status() -> None:
    assert describe_exit(-signal.SIGSEGV, "while generating") == (
        "The model process died (SIGSEGV — a crash in the model's native code) while generating."
    )
    assert describe_exit(3, "while loading") == (
        "The model process exited unexpectedly with status 3 while loading."
    )


async def test_a_model_that_fails_to_load_raises_backend_error_with_the_reason(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"NOPE, this is not a model. " * 100)
    before = runner_pids()
    with pytest.raises(BackendError) as failed:
        await supervisor.load(ModelSpec(model_id=9, path=str(garbage), backend="llama_cpp"))
    assert failed.value.reason.startswith("llama.cpp could not load garbage.gguf (invalid magic")
    assert supervisor.status() == []
    assert runner_pids() == before


# --- memory ----------------------------------------------------------------------------------


async def test_the_memory_budget_unloads_the_least_recently_used_idle_model(
    tiny_gguf_path: Path, tiny_ggml_path: Path
) -> None:
    supervisor = Supervisor(memory_budget_bytes=2 * GIB, idle_unload_seconds=0, queue_depth=2)
    try:
        a = tiny(tiny_gguf_path, model_id=1, estimated_bytes=GIB)
        b = tiny(tiny_gguf_path, model_id=2, estimated_bytes=GIB)
        c = tiny(tiny_ggml_path, model_id=3, estimated_bytes=GIB)
        await supervisor.load(a)
        evicted = await supervisor.load(b)
        await collect(supervisor.generate(a, prompt("hi", 2)))  # b is now the least recent
        await supervisor.load(c)
        assert sorted(s.model_id for s in supervisor.status()) == [1, 3]
        assert not psutil.pid_exists(evicted.pid)
    finally:
        await supervisor.close()


async def test_a_model_larger_than_the_whole_budget_is_refused_with_a_sentence(
    tiny_gguf_path: Path,
) -> None:
    supervisor = Supervisor(memory_budget_bytes=GIB, idle_unload_seconds=0, queue_depth=2)
    before = runner_pids()
    try:
        with pytest.raises(MemoryBudgetExceeded) as refused:
            await supervisor.load(tiny(tiny_gguf_path, estimated_bytes=3 * GIB))
        assert refused.value.reason == (
            "This model needs about 3,072 MiB of memory, more than the whole memory budget of "
            "1,024 MiB; raise the budget or choose a smaller model."
        )
        assert runner_pids() == before
    finally:
        await supervisor.close()


async def test_a_model_is_refused_while_busy_models_hold_the_budget(
    tiny_long_gguf_path: Path, tiny_gguf_path: Path
) -> None:
    supervisor = Supervisor(memory_budget_bytes=GIB, idle_unload_seconds=0, queue_depth=2)
    try:
        spec = endless(tiny_long_gguf_path, estimated_bytes=GIB * 3 // 4)
        busy = supervisor.generate(spec, ongoing())
        await anext(busy)
        with pytest.raises(MemoryBudgetExceeded, match="the models using the rest are busy"):
            await supervisor.load(tiny(tiny_gguf_path, estimated_bytes=GIB // 2))
        assert [s.state for s in supervisor.status()] == ["busy"]
        await busy.aclose()
    finally:
        await supervisor.close()


async def test_an_idle_model_is_unloaded_after_the_idle_time(tiny_gguf_path: Path) -> None:
    supervisor = Supervisor(memory_budget_bytes=GIB, idle_unload_seconds=2, queue_depth=2)
    try:
        status = await supervisor.load(tiny(tiny_gguf_path))
        await asyncio.sleep(1.2)
        await collect(supervisor.generate(tiny(tiny_gguf_path), prompt("hi", 2)))
        await asyncio.sleep(1.2)
        # 2.4 s since it loaded, 1.2 s since it was used: both well away from the 2 s limit.
        assert [s.pid for s in supervisor.status()] == [status.pid]  # use resets the clock
        deadline = time.monotonic() + 5
        while supervisor.status() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert supervisor.status() == []
        assert not psutil.pid_exists(status.pid)
    finally:
        await supervisor.close()


# --- status, unload, close ---------------------------------------------------------------------


async def test_status_reports_pid_memory_times_and_queue(
    supervisor: Supervisor, tiny_long_gguf_path: Path
) -> None:
    before = datetime.now(UTC)
    loaded = await supervisor.load(endless(tiny_long_gguf_path, estimated_bytes=123))
    assert loaded.pid in runner_pids()
    # Python and llama.cpp's library alone; the model is 200 KB and its KV cache 8 MiB.
    assert loaded.rss_bytes > 20 * 2**20
    assert loaded.loaded_at is not None and loaded.last_used_at is not None
    assert before <= loaded.loaded_at <= loaded.last_used_at <= datetime.now(UTC)
    assert (loaded.model_id, loaded.state, loaded.queue_length) == (1, "idle", 0)
    assert (loaded.parallel_sequences, loaded.active_sequences) == (1, 0)
    assert (loaded.backend, loaded.context_length, loaded.estimated_bytes) == (
        "llama_cpp",
        ENDLESS_CONTEXT,
        123,
    )

    stream = supervisor.generate(endless(tiny_long_gguf_path), ongoing())
    await anext(stream)
    [busy] = supervisor.status()
    assert (busy.state, busy.queue_length, busy.pid) == ("busy", 1, loaded.pid)
    assert busy.active_sequences == 1
    assert busy.last_used_at is not None and busy.last_used_at > loaded.last_used_at
    await stream.aclose()


async def test_a_new_context_length_reloads_the_model(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    small = await supervisor.load(tiny(tiny_gguf_path, context_length=64))
    large = await supervisor.load(tiny(tiny_gguf_path, context_length=256))
    assert (small.context_length, large.context_length) == (64, 256)
    assert large.pid != small.pid and not psutil.pid_exists(small.pid)


async def test_unload_stops_the_runner_and_says_whether_one_was_loaded(
    supervisor: Supervisor, tiny_gguf_path: Path
) -> None:
    assert await supervisor.unload(2) is False
    loaded = await supervisor.load(tiny(tiny_gguf_path))
    assert await supervisor.unload(2) is True
    assert supervisor.status() == []
    assert not psutil.pid_exists(loaded.pid)


async def test_close_leaves_no_runner_process(
    tiny_gguf_path: Path, tiny_ggml_path: Path, tiny_long_gguf_path: Path
) -> None:
    supervisor = Supervisor(memory_budget_bytes=8 * GIB, idle_unload_seconds=5, queue_depth=2)
    before = runner_pids()
    await supervisor.load(tiny(tiny_gguf_path))
    await supervisor.load(tiny(tiny_ggml_path, model_id=3))
    stream = supervisor.generate(endless(tiny_long_gguf_path), ongoing())
    await anext(stream)
    ours = runner_pids() - before
    assert ours == {s.pid for s in supervisor.status()} and len(ours) == 3
    await supervisor.close()
    _, done = await collect(stream)
    assert done["finish_reason"] == "cancelled"  # the generation in flight ended cleanly
    assert not runner_pids() & ours
    assert not any(psutil.pid_exists(pid) for pid in ours)
    assert supervisor.status() == []


def test_one_supervisor_serves_callers_on_different_event_loops(tiny_gguf_path: Path) -> None:
    # What Django does: one supervisor per process, called from daphne's loop and from the
    # short-lived loops async_to_sync makes.
    supervisor = Supervisor(memory_budget_bytes=GIB, idle_unload_seconds=0, queue_depth=2)
    try:
        first = asyncio.run(supervisor.load(tiny(tiny_gguf_path)))
        _, done = asyncio.run(collect(supervisor.generate(tiny(tiny_gguf_path), prompt("hi", 3))))
        assert done["completion_tokens"] == 3
        assert supervisor.status()[0].pid == first.pid
    finally:
        asyncio.run(supervisor.close())
    assert not psutil.pid_exists(first.pid)
