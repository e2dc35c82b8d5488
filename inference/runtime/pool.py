"""The runners of one event loop: per-model queues, the memory budget, eviction, idle unload.

``RunnerPool`` does the supervisor's work, and every method runs on one event loop: the
supervisor's own, in its own thread (see ``inference.runtime.supervisor``, the public face).

A model's lock is held only to start, replace or stop its runner. Generations do not hold
it: every request to a loaded model is sent to its runner at once, with its priority, and
the runner decides the order and which requests it decodes together (up to its
``parallel_sequences``); its messages come back interleaved and are routed by request id
(``RunnerProcess.open``). Different models have different runners and run at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.errors import (
    LOAD_FAILED,
    BackendError,
    InferenceError,
    MemoryBudgetExceeded,
    RunnerCrashed,
    SupervisorBusy,
)
from inference.runtime.process import (
    STOP_GRACE_SECONDS,
    Exited,
    RunnerProcess,
    RunnerState,
    RunnerStatus,
    describe_exit,
)
from inference.runtime.protocol import (
    ChatMessage,
    Command,
    DoneRunEvent,
    GenerateCommand,
    GenerateRequest,
    ModelSpec,
    Priority,
    RunEvent,
    RunnerMessage,
    check_input,
    done_before_start,
    done_event,
)

logger = logging.getLogger(__name__)

#: ``code`` of the error a request gets when the supervisor shuts down under it (its runner
#: stopped before it could end the generation itself): the caller records it as interrupted.
SHUT_DOWN = "shutdown"


@dataclass(eq=False)
class _Slot:
    """A model's place in the pool: its runner, if one is started, and its requests.

    ``pending``: generations admitted and not ended, of both priorities (the status's
    ``queue_length``); ``interactive``: those of them at interactive priority (what the queue
    limit counts); ``active``: those sent to the runner. ``settled`` is set whenever the
    runner's last request in flight ends, for a spec change waiting to replace it.
    """

    model_id: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: int = 0
    interactive: int = 0
    active: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    runner: RunnerProcess | None = None
    spec: ModelSpec | None = None


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


class RunnerPool:
    """Runners by model id, on the current event loop. See ``Supervisor`` for the contract."""

    def __init__(
        self,
        *,
        memory_budget_bytes: int,
        idle_unload_seconds: float,
        queue_depth: int,
        start_timeout: float,
    ) -> None:
        self.memory_budget_bytes = memory_budget_bytes
        self._idle_unload_seconds = idle_unload_seconds
        self._queue_depth = queue_depth
        self._start_timeout = start_timeout
        self._slots: dict[int, _Slot] = {}
        self._budget_lock = asyncio.Lock()
        self._closing = False
        self._requests: set[asyncio.Task[object]] = set()
        # The cancel events of the generations running or waiting, so a shutdown can end them.
        self._cancels: set[asyncio.Event] = set()
        self._idle_task: asyncio.Task[None] | None = None

    def start_idle_unloader(self) -> None:
        if self._idle_unload_seconds > 0 and self._idle_task is None:
            self._idle_task = asyncio.ensure_future(self._unload_idle())

    # --- requests ----------------------------------------------------------------------------

    async def generate(
        self,
        spec: ModelSpec,
        request: GenerateRequest,
        emit: Callable[[RunEvent], None],
        cancelled: asyncio.Event,
        *,
        priority: Priority = "interactive",
    ) -> None:
        """Send ``request`` to the model's runner (started first if need be), passing its
        events to ``emit``; the runner interleaves it with the model's other requests.

        An interactive request is refused with ``SupervisorBusy`` when the model already has
        ``queue_depth`` interactive requests waiting beyond the ``parallel_sequences`` it
        decodes at once. Batch requests are never refused as busy: the runner serves them
        when no interactive one needs the room, and their sender bounds how many it sends.
        """
        self._track()
        if self._closing:
            cancelled.set()  # a shutdown has begun: end at once, like a request cut short
        slot = self._slot(spec.model_id)
        interactive = priority != "batch"
        if interactive:
            parallel = self._parallel_sequences(slot, spec)
            if slot.interactive >= self._queue_depth + parallel:
                raise SupervisorBusy(
                    f"The model is busy: it already has {slot.interactive} request(s) running "
                    "or waiting, as many as it takes at once; try again in a moment."
                )
            slot.interactive += 1
        slot.pending += 1
        self._cancels.add(cancelled)
        queued = time.monotonic()
        try:
            ready = await self._runner_for(slot, spec, cancelled)
            if ready is None:
                done = done_before_start(queued)
            else:
                runner, load_ms = ready
                if cancelled.is_set():
                    done = done_before_start(queued, load_ms)
                else:
                    queue_ms = max((time.monotonic() - queued) * 1000 - load_ms, 0.0)
                    done = await self._stream(
                        slot, runner, request, emit, cancelled, priority, queue_ms, load_ms
                    )
        finally:
            slot.pending -= 1
            if interactive:
                slot.interactive -= 1
            self._cancels.discard(cancelled)
        emit(done)

    def _parallel_sequences(self, slot: _Slot, spec: ModelSpec) -> int:
        """How many requests the model decodes at once: what its runner said when it loaded
        this spec, else what the spec asks for."""
        runner = slot.runner
        if runner is not None and runner.loaded is not None and runner.spec == spec.runner_spec():
            return max(int(runner.loaded.get("parallel_sequences", 1)), 1)
        return max(spec.parallel_sequences, 1)

    async def _stream(
        self,
        slot: _Slot,
        runner: RunnerProcess,
        request: GenerateRequest,
        emit: Callable[[RunEvent], None],
        cancelled: asyncio.Event,
        priority: Priority,
        queue_ms: float,
        load_ms: float,
    ) -> DoneRunEvent:
        """Emit the generation's token events and return its done event.

        Called right after ``_runner_for`` with no await in between, so no eviction or idle
        unload can take the runner before the request is open on it.
        """
        request_id = runner.new_id()
        command: GenerateCommand = {
            "type": "generate",
            "id": request_id,
            "prompt": request.prompt,
            "messages": _chat(request.messages),
            "params": dataclasses.asdict(request.params),
            "priority": priority,
        }
        replies = runner.open(request_id)
        slot.active += 1
        runner.touch()
        runner.send(command)
        sent = time.monotonic()
        first: float | None = None
        watcher = asyncio.ensure_future(_forward_cancel(runner, request_id, cancelled))
        try:
            while True:
                message = await self._reply(runner, replies, "while generating")
                if message["type"] == "token":
                    first = first or time.monotonic()
                    emit({"type": "token", "text": message["text"]})
                elif message["type"] == "done":
                    timings = (sent, first, time.monotonic(), queue_ms, load_ms)
                    return done_event(message, *timings, pid=runner.pid or 0)
        finally:
            watcher.cancel()
            slot.active -= 1
            self._end(slot, runner, request_id)

    async def count_tokens(
        self, spec: ModelSpec, *, prompt: str | None, messages: list[dict[str, str]] | None
    ) -> int:
        """The model's own token count for ``prompt`` or rendered ``messages``.

        Sent to the runner at once, like a generation; the runner answers it between steps."""
        check_input(prompt, messages)
        self._track()
        slot = self._slot(spec.model_id)
        ready = await self._runner_for(slot, spec, None)
        assert ready is not None  # only a cancel makes it None, and this has none
        runner, _ = ready
        request_id = runner.new_id()
        command: Command = {
            "type": "count",
            "id": request_id,
            "prompt": prompt,
            "messages": _chat(messages),
        }
        replies = runner.open(request_id)
        try:
            runner.send(command)
            runner.touch()
            message = await self._reply(runner, replies, "while counting tokens")
            return int(message["count"]) if message["type"] == "count" else 0
        finally:
            self._end(slot, runner, request_id)

    def _end(self, slot: _Slot, runner: RunnerProcess, request_id: str) -> None:
        runner.close(request_id)
        runner.touch()
        if runner.in_flight == 0:
            slot.settled.set()

    async def _reply(
        self,
        runner: RunnerProcess,
        replies: asyncio.Queue[RunnerMessage | Exited],
        doing: str,
    ) -> RunnerMessage:
        """The runner's next message about one request; its errors and its death raise."""
        message = await replies.get()
        if isinstance(message, Exited):
            if runner.stopping and self._closing:
                raise InferenceError(
                    "The inference supervisor shut down during this request.", code=SHUT_DOWN
                )
            if runner.stopping:
                raise InferenceError("The model was unloaded while it was working on this request.")
            await runner.collect_output()
            reason = describe_exit(message.returncode, doing)
            raise RunnerCrashed(runner.with_output(reason))
        if message["type"] == "error":
            raise BackendError(message["reason"], code=message.get("code"))
        return message

    async def load(self, spec: ModelSpec) -> RunnerStatus:
        self._track()
        slot = self._slot(spec.model_id)
        ready = await self._runner_for(slot, spec, None)
        assert ready is not None
        return self._status_of(slot, ready[0])

    async def unload(self, model_id: int) -> bool:
        """Stop the model's runner. A generation in progress ends "cancelled"; requests
        waiting for the model will start it again."""
        slot = self._slots.get(model_id)
        if slot is None or slot.runner is None:
            return False
        await slot.runner.stop()
        return True

    # --- runners -----------------------------------------------------------------------------

    def _slot(self, model_id: int) -> _Slot:
        slot = self._slots.get(model_id)
        if slot is None:
            slot = self._slots[model_id] = _Slot(model_id)
        return slot

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _runner_for(
        self, slot: _Slot, spec: ModelSpec, cancelled: asyncio.Event | None
    ) -> tuple[RunnerProcess, float] | None:
        """``_ready_runner`` under the model's lock; None if ``cancelled`` is set first."""
        if cancelled is None:
            await slot.lock.acquire()
        elif not await _acquire_unless(slot.lock, cancelled):
            return None
        try:
            return await self._ready_runner(slot, spec, cancelled)
        finally:
            slot.lock.release()

    async def _ready_runner(
        self, slot: _Slot, spec: ModelSpec, cancelled: asyncio.Event | None = None
    ) -> tuple[RunnerProcess, float] | None:
        """The model's loaded runner, started first if need be; and the ms spent starting it.
        None if ``cancelled`` is set while the old runner's requests finish.

        Called with ``slot.lock`` held.
        """
        runner = slot.runner
        if runner is not None:
            if runner.alive and not runner.stopping and runner.spec == spec.runner_spec():
                return runner, 0.0
            # A changed spec (another context length, say): the requests already on the old
            # runner finish first, as they would have before this one in a queue; the lock
            # held meanwhile keeps new ones from joining them.
            if not await _settle_unless(slot, runner, cancelled):
                return None
            await runner.stop()  # or an unload under way: wait until it is gone
        if self._closing:
            raise InferenceError(
                "The inference supervisor is shutting down; try again later.", code=SHUT_DOWN
            )
        started = time.monotonic()
        async with self._budget_lock:
            await self._make_room(spec)
            runner = RunnerProcess(
                spec.runner_spec(), on_exit=functools.partial(self._runner_exited, slot)
            )
            await runner.start()
            # In the slot before the budget lock is released, so the next start counts it.
            slot.runner, slot.spec = runner, spec
        try:
            loaded = await runner.wait_loaded(self._start_timeout)
        except InferenceError as exc:
            exc.code = exc.code or LOAD_FAILED
            raise
        finally:
            if runner.loaded is None:
                await runner.stop(grace=0)
        logger.info(
            "model %s loaded in runner %s (%.0f ms)",
            spec.model_id,
            loaded["pid"],
            loaded["load_ms"],
        )
        return runner, (time.monotonic() - started) * 1000

    def _runner_exited(self, slot: _Slot, runner: RunnerProcess) -> None:
        if slot.runner is runner:
            slot.runner, slot.spec = None, None
        if not runner.stopping:
            logger.warning("runner %s of model %s ended unexpectedly", runner.pid, slot.model_id)

    async def _make_room(self, spec: ModelSpec) -> None:
        """Unload least recently used idle runners until ``spec`` fits in the budget."""
        need, budget = spec.estimated_bytes, self.memory_budget_bytes
        if need > budget:
            raise MemoryBudgetExceeded(
                f"This model needs about {_mib(need)} of memory, more than the whole memory "
                f"budget of {_mib(budget)}; raise the budget or choose a smaller model."
            )
        while (used := self._charged_bytes()) + need > budget:
            idle = [
                (slot.runner.last_used_monotonic, slot)
                for slot in self._slots.values()
                if slot.runner is not None
                and slot.runner.loaded is not None
                and not slot.runner.stopping
                and slot.pending == 0
                and slot.runner.in_flight == 0
                and not slot.lock.locked()
            ]
            if not idle:
                raise MemoryBudgetExceeded(
                    f"This model needs about {_mib(need)} of memory but only "
                    f"{_mib(max(budget - used, 0))} of the {_mib(budget)} memory budget is free, "
                    "and the models using the rest are busy; try again when they finish."
                )
            _, victim = min(idle, key=lambda pair: pair[0])
            logger.info("unloading model %s to make room for %s", victim.model_id, spec.model_id)
            async with victim.lock:  # free now (checked above), so this does not wait
                if victim.runner is not None:
                    await victim.runner.stop()

    def _charged_bytes(self) -> int:
        # A runner still loading has not reached its size yet, so its estimate counts until
        # the measured RSS is larger.
        return sum(
            max(slot.runner.rss_bytes(), slot.spec.estimated_bytes if slot.spec else 0)
            for slot in self._slots.values()
            if slot.runner is not None and slot.runner.alive
        )

    async def _unload_idle(self) -> None:
        idle = self._idle_unload_seconds
        period = min(max(idle / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for slot in list(self._slots.values()):
                runner = slot.runner
                if (
                    runner is None
                    or runner.loaded is None
                    or runner.in_flight
                    or slot.pending
                    or slot.lock.locked()
                    or now - runner.last_used_monotonic < idle
                ):
                    continue
                logger.info("unloading model %s after %g s unused", slot.model_id, idle)
                try:
                    async with slot.lock:
                        await runner.stop()
                except Exception:  # the unloader must outlive any one runner's trouble
                    logger.exception("unloading idle model %s failed", slot.model_id)

    # --- status and shutdown -----------------------------------------------------------------

    def status(self) -> list[RunnerStatus]:
        """Safe to call from any thread: it only reads."""
        statuses = []
        for slot in list(self._slots.values()):
            runner = slot.runner
            if runner is not None and runner.pid is not None:
                statuses.append(self._status_of(slot, runner))
        return statuses

    def _status_of(self, slot: _Slot, runner: RunnerProcess) -> RunnerStatus:
        state: RunnerState
        if runner.stopping:
            state = "stopping"
        elif runner.loaded is None:
            state = "starting"
        else:
            state = "busy" if slot.active else "idle"
        assert runner.pid is not None
        return RunnerStatus(
            model_id=slot.model_id,
            pid=runner.pid,
            rss_bytes=runner.rss_bytes(),
            loaded_at=runner.loaded_at,
            last_used_at=runner.last_used_at,
            queue_length=slot.pending,
            state=state,
            backend=runner.spec["backend"],
            context_length=runner.loaded["context_length"] if runner.loaded else None,
            estimated_bytes=slot.spec.estimated_bytes if slot.spec else 0,
            notices=tuple(runner.loaded["notices"]) if runner.loaded else (),
            parallel_sequences=max(int(runner.loaded.get("parallel_sequences", 1)), 1)
            if runner.loaded
            else 1,
            active_sequences=slot.active,
        )

    def interrupt(self) -> None:
        """Begin a shutdown: end every generation running or waiting as if cancelled (each
        still emits its ``done`` with the counts so far) and refuse to start runners."""
        self._closing = True
        for cancelled in list(self._cancels):
            cancelled.set()

    async def close(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """End the requests in flight, then stop every runner, in about ``grace`` seconds.

        Generations are cancelled first, so each ends with its text so far and its counts
        (a runner stops within a token); then the runners are told to exit, and one still
        there when ``grace`` is up (stuck in native code, say) is killed.
        """
        deadline = time.monotonic() + grace
        self.interrupt()
        if self._idle_task is not None:
            self._idle_task.cancel()
            await asyncio.wait({self._idle_task})
        requests = self._requests - {asyncio.current_task()}
        if requests:
            await asyncio.wait(requests, timeout=grace)
        # A healthy runner exits at once when idle; the floor only spares one that was just
        # released from being killed before it could read "shutdown".
        left = max(deadline - time.monotonic(), 0.2)
        runners = [slot.runner for slot in self._slots.values() if slot.runner is not None]
        await asyncio.gather(*(r.stop(left) for r in runners), return_exceptions=True)
        requests = self._requests - {asyncio.current_task()}
        if requests:  # their runner is gone now, so they end at once
            _, late = await asyncio.wait(requests, timeout=0.5)
            for task in late:
                task.cancel()


def _chat(messages: list[dict[str, str]] | None) -> list[ChatMessage] | None:
    if messages is None:
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


async def _acquire_unless(lock: asyncio.Lock, stop: asyncio.Event) -> bool:
    """Acquire ``lock`` and return True, or return False if ``stop`` is set first."""
    if stop.is_set():
        return False
    acquiring = asyncio.ensure_future(lock.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not acquiring.done():
            acquiring.cancel()
        # Let a cancelled acquire settle: it may have been handed the lock in the meantime.
        await asyncio.wait({acquiring})
    return not acquiring.cancelled() and acquiring.exception() is None


async def _settle_unless(slot: _Slot, runner: RunnerProcess, stop: asyncio.Event | None) -> bool:
    """Wait until ``runner`` has no request in flight and return True; False if ``stop`` is
    set first. The runner's death settles it too: its requests end with the crash."""
    while runner.in_flight and runner.alive:
        if stop is not None and stop.is_set():
            return False
        slot.settled.clear()
        waits = {
            asyncio.ensure_future(slot.settled.wait()),
            asyncio.ensure_future(runner.exited.wait()),
        }
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
    return not (stop is not None and stop.is_set())


async def _forward_cancel(runner: RunnerProcess, request_id: str, cancelled: asyncio.Event) -> None:
    await cancelled.wait()
    runner.send({"type": "cancel", "id": request_id})
