"""The inference supervisor: the async API Django calls to run prompts on local models.

One runner process per loaded model (``inference.runtime.runner``); a model's requests all go
to its runner at once, which decodes up to ``parallel_sequences`` of them together (one at a
time for a backend that cannot), interactive ones before batch ones, with a bounded queue of
interactive requests; different models run at the same time; a memory budget unloads the
least recently used idle models; idle models are unloaded after a while; a runner that dies
is noticed and replaced on the next request.

Why a thread of its own: the supervisor owns long-lived things bound to an event loop
(runner pipes, per-model locks, the idle-unload task), while Django calls it from many loops:
daphne's, and the short-lived ones ``async_to_sync`` makes for each call from sync code and
tests. So the supervisor runs its own loop in a daemon thread, and every public coroutine
hands its work to that loop and awaits the result on the caller's loop. One instance can
therefore be created once per process and shared; its loop starts on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

from inference.errors import (
    InferenceError,
    MemoryBudgetExceeded,
    RunnerCrashed,
    SupervisorBusy,
)
from inference.runtime.pool import SHUT_DOWN, RunnerPool
from inference.runtime.process import STOP_GRACE_SECONDS, RunnerState, RunnerStatus
from inference.runtime.protocol import (
    DoneRunEvent,
    GenerateRequest,
    ModelSpec,
    Priority,
    RunEvent,
    TokenRunEvent,
)

__all__ = [
    "DoneRunEvent",
    "GenerateRequest",
    "MemoryBudgetExceeded",
    "ModelSpec",
    "Priority",
    "RunEvent",
    "RunnerCrashed",
    "RunnerState",
    "RunnerStatus",
    "SHUT_DOWN",
    "Supervisor",
    "SupervisorBusy",
    "TokenRunEvent",
]

T = TypeVar("T")


class _End:
    """Marks the end of a generation's events in the caller's queue."""


_END = _End()


class Supervisor:
    """Runs models in runner processes; safe to share across threads and event loops.

    ``memory_budget_bytes``: what loaded runners may use together (measured RSS, or the
    spec's estimate while that is larger). ``idle_unload_seconds``: unload a model unused this
    long; 0 never does. ``queue_depth``: how many interactive requests may wait for one model
    beyond the ``parallel_sequences`` it decodes at once; one more raises ``SupervisorBusy``
    at once (batch requests are never refused as busy). ``start_timeout``: seconds a
    model may take to load.

    Errors are ``InferenceError``s with a sentence in ``reason``: ``SupervisorBusy``,
    ``RunnerCrashed``, ``MemoryBudgetExceeded``, and ``BackendError`` for a model that fails
    to load or a request the backend refuses.
    """

    def __init__(
        self,
        *,
        memory_budget_bytes: int,
        idle_unload_seconds: float,
        queue_depth: int,
        start_timeout: float = 120.0,
    ) -> None:
        if memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive; got {memory_budget_bytes}.")
        if idle_unload_seconds < 0:
            raise ValueError(f"idle_unload_seconds must be 0 or more; got {idle_unload_seconds}.")
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be at least 1; got {queue_depth}.")
        if start_timeout <= 0:
            raise ValueError(f"start_timeout must be positive; got {start_timeout}.")
        self.memory_budget_bytes = memory_budget_bytes
        self._idle_unload_seconds = idle_unload_seconds
        self._queue_depth = queue_depth
        self._start_timeout = start_timeout
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: RunnerPool | None = None
        self._shutting_down = False
        self._final = False

    # --- the public API ----------------------------------------------------------------------

    async def generate(
        self,
        spec: ModelSpec,
        request: GenerateRequest,
        *,
        cancel_event: asyncio.Event | None = None,
        priority: Priority = "interactive",
    ) -> AsyncGenerator[RunEvent, None]:
        """Stream ``{"type": "token", "text"}`` events, then exactly one ``done`` event.

        The model is loaded first if need be; its runner decodes the request together with
        the model's others, or after them when it is full. ``priority`` "batch": the request
        waits while interactive ones need the room, is never refused as busy, and its text
        arrives in one token event just before its done.

        Setting ``cancel_event`` (an event of the caller's loop) stops the generation within
        a token or two and still yields the final ``done``, with finish_reason "cancelled"
        and the token counts so far. Closing the iterator early (``aclose()``, ``break``) or
        cancelling the consuming task cancels too, and waits until the runner has stopped
        this request, so its room is free for the next one and the model stays loaded.

        A shutdown (``interrupt()``, ``close()``) ends the generation the same way, with a
        "cancelled" done the caller did not ask for: that is how a caller tells the two apart.
        """
        loop, pool = self._ensure_started()
        caller = asyncio.get_running_loop()
        events: asyncio.Queue[RunEvent | _End] = asyncio.Queue()

        def deliver(item: RunEvent | _End) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                caller.call_soon_threadsafe(events.put_nowait, item)

        # Bound to the supervisor's loop on first use there; set only from that loop.
        cancelled = asyncio.Event()

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # the supervisor has been closed
                loop.call_soon_threadsafe(cancelled.set)

        future = asyncio.run_coroutine_threadsafe(
            pool.generate(spec, request, deliver, cancelled, priority=priority), loop
        )
        future.add_done_callback(lambda _: deliver(_END))
        watcher = None
        if cancel_event is not None:
            watcher = asyncio.ensure_future(_call_when_set(cancel_event, cancel))
        finished = False
        try:
            while not isinstance(item := await events.get(), _End):
                yield item
            finished = True
            future.result()  # raises the request's error, after the events that came before it
        finally:
            if watcher is not None:
                watcher.cancel()
            if not finished:
                cancel()
                # Wait for the runner to acknowledge; shielded, so that cancelling this wait
                # too leaves the request to finish on the supervisor's loop.
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wrap_future(future))

    async def load(self, spec: ModelSpec) -> RunnerStatus:
        """Load the model now (if it is not loaded) and return its status."""
        return await self._call(lambda pool: pool.load(spec))

    async def unload(self, model_id: int) -> bool:
        """Stop the model's runner, freeing its memory; False if it was not loaded.

        A generation in progress ends with finish_reason "cancelled"; requests still waiting
        for the model load it again.
        """
        return await self._call(lambda pool: pool.unload(model_id))

    async def count_tokens(
        self,
        spec: ModelSpec,
        *,
        prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
    ) -> int:
        """How many tokens the model's own tokenizer makes of ``prompt`` or of ``messages``
        rendered with its chat template. Sent to the runner at once, not queued behind the
        model's generations."""
        return await self._call(
            lambda pool: pool.count_tokens(spec, prompt=prompt, messages=messages)
        )

    def status(self) -> list[RunnerStatus]:
        """Every runner process, measured now (``rss_bytes`` through psutil). Never blocks."""
        pool = self._pool
        return pool.status() if pool is not None else []

    @property
    def shutting_down(self) -> bool:
        """True from ``interrupt()`` or ``close()`` until the supervisor is used again.

        Still true once ``close()`` returns: the requests it ended may be recording that."""
        return self._shutting_down

    def interrupt(self) -> None:
        """Begin a shutdown: every generation running or waiting ends now with its text so far
        (a "cancelled" done), and no new runner starts. Safe from any thread; takes no lock,
        so a signal handler may call it. ``close()`` still has to stop the runners."""
        self._shutting_down = True
        loop, pool = self._loop, self._pool
        if loop is not None and pool is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just been closed
                loop.call_soon_threadsafe(pool.interrupt)

    async def close(self, grace: float = STOP_GRACE_SECONDS, *, final: bool = False) -> None:
        """End the generations in flight, stop every runner (killing one that has not exited
        after ``grace`` seconds) and the supervisor's thread. Using it again starts afresh,
        unless ``final``: then every later request fails at once (a process shutting down
        must not start runners that would outlive it)."""
        self._shutting_down = True
        self._final = self._final or final
        with self._guard:
            loop, thread, pool = self._loop, self._thread, self._pool
            self._loop = self._thread = self._pool = None
        if loop is None or thread is None or pool is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool.close(grace), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # --- the supervisor's own loop -----------------------------------------------------------

    def _ensure_started(self) -> tuple[asyncio.AbstractEventLoop, RunnerPool]:
        if self._final:
            raise InferenceError(
                "The inference supervisor has shut down: the server is stopping.", code=SHUT_DOWN
            )
        with self._guard:
            if self._loop is None or self._pool is None:
                loop = asyncio.new_event_loop()
                pool = RunnerPool(
                    memory_budget_bytes=self.memory_budget_bytes,
                    idle_unload_seconds=self._idle_unload_seconds,
                    queue_depth=self._queue_depth,
                    start_timeout=self._start_timeout,
                )
                thread = threading.Thread(
                    target=_run_forever, args=(loop,), name="inference-supervisor", daemon=True
                )
                thread.start()
                loop.call_soon_threadsafe(pool.start_idle_unloader)
                self._loop, self._thread, self._pool = loop, thread, pool
                self._shutting_down = False
            return self._loop, self._pool

    async def _call(self, work: Callable[[RunnerPool], Coroutine[Any, Any, T]]) -> T:
        loop, pool = self._ensure_started()
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(work(pool), loop)
        # Shielded: a caller that stops waiting must not cancel the work halfway (a model
        # half loaded, a lock half released); the work finishes on the supervisor's loop.
        return await asyncio.shield(asyncio.wrap_future(future))


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def _call_when_set(event: asyncio.Event, callback: Callable[[], None]) -> None:
    await event.wait()
    callback()
