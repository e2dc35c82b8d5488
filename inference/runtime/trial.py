"""The trial load that the install path runs before a model is accepted.

It is a short use of a runner (``inference.runtime.runner``), through the same process handle
and protocol as every run: start a runner for the file, wait for ``loaded``, generate a few
tokens from a short prompt, stop it. A malformed file can crash native code; in a runner that
is a failed install with a reason, not a dead web server. The caller never imports a native
library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from inference.backends.base import GenerationParams, LoadOptions
from inference.errors import BackendError, InferenceError
from inference.runtime.process import Exited, RunnerProcess, describe_exit
from inference.runtime.protocol import GenerateCommand, LoadedMessage, RunnerMessage, RunnerSpec
from inference.runtime.runner import CRASH_FOR_TESTS_ENV

__all__ = ["CRASH_FOR_TESTS_ENV", "TRIAL_PROMPT", "TrialResult", "trial_load"]

#: The prompt the runner continues. Several tokens long on purpose: llama.cpp takes a different
#: code path for a multi-token batch than for one token, and both should run.
TRIAL_PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
TRIAL_MAX_TOKENS = 4
#: Enough context for the prompt and the sample; small, so the trial stays light on memory.
TRIAL_CONTEXT_LENGTH = 256
#: How often ``should_stop`` is asked while the runner works.
_POLL_SECONDS = 0.5

StopCheck = Callable[[], str | None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What a trial load found.

    ``seconds`` is the runner's own time to load plus the time to sample when it got that far,
    else the wall time waited. ``error`` is None when ``ok``, else a sentence a person can act on.
    """

    ok: bool
    seconds: float
    sample_text: str = ""
    prompt_tokens: int = 0
    error: str | None = None


def trial_load(
    path: Path,
    *,
    backend: str,
    model_type: str | None = None,
    timeout: float = 120.0,
    should_stop: StopCheck | None = None,
) -> TrialResult:
    """Load ``path`` with ``backend`` in a runner process and generate a few tokens.

    Never raises for a bad model: every failure (backend error, missing library, crash by a
    signal, non-zero exit, timeout) comes back as ``ok=False`` with a readable ``error``.
    ``should_stop`` is asked about twice a second, in the caller's thread; when it returns a
    reason (the install was cancelled) the runner is killed and that reason comes back as the
    error.
    """
    trial = _Trial(Path(path), backend, model_type, timeout)
    # The trial's event loop runs in a thread of its own, so this works from sync and async
    # callers alike, and ``should_stop`` (which may use the database) runs here, in the
    # caller's thread, never inside an event loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="trial-load") as pool:
        future = pool.submit(asyncio.run, trial.run())
        while True:
            try:
                return future.result(timeout=None if should_stop is None else _POLL_SECONDS)
            except TimeoutError:
                assert should_stop is not None
                if reason := should_stop():
                    trial.stop(reason)


class _Stopped(InferenceError):
    """The caller stopped the trial; ``reason`` is the caller's own sentence."""


@dataclass
class _Trial:
    path: Path
    backend: str
    model_type: str | None
    timeout: float
    started: float = dataclasses.field(default_factory=time.monotonic)
    _stop_reason: str | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stopping: asyncio.Event | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def stop(self, reason: str) -> None:
        """Kill the runner and end the trial with ``reason``; safe from any thread."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
            if self._loop is not None and self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)

    async def run(self) -> TrialResult:
        with self._lock:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            if self._stop_reason is not None:
                self._stopping.set()
        runner: RunnerProcess | None = None
        try:
            options = LoadOptions(
                context_length=TRIAL_CONTEXT_LENGTH, model_type=self.model_type, seed=0
            )
            spec: RunnerSpec = {
                "path": str(self.path.resolve()),
                "backend": self.backend,
                "options": dataclasses.asdict(options),
            }
            runner = RunnerProcess(spec, on_exit=lambda _runner: None)
            await runner.start()
            loaded = await self._unless_stopped(runner, runner.wait_loaded(self.timeout))
            return await self._sample(runner, loaded)
        except InferenceError as exc:  # _Stopped too: the caller's reason
            return self._failed(exc.reason)
        finally:
            if runner is not None and runner.pid is not None:
                await runner.stop()

    async def _sample(self, runner: RunnerProcess, loaded: LoadedMessage) -> TrialResult:
        params = GenerationParams(max_tokens=TRIAL_MAX_TOKENS, temperature=0.0, seed=0)
        command: GenerateCommand = {
            "type": "generate",
            "id": runner.new_id(),
            "prompt": TRIAL_PROMPT,
            "messages": None,
            "params": dataclasses.asdict(params),
        }
        replies = runner.open(command["id"])
        sent = time.monotonic()
        runner.send(command)
        pieces: list[str] = []
        while True:
            message = await self._unless_stopped(runner, self._next(replies))
            if isinstance(message, Exited):
                await runner.collect_output()
                reason = describe_exit(message.returncode, "while generating")
                return self._failed(runner.with_output(reason))
            if message["type"] == "token":
                pieces.append(message["text"])
            elif message["type"] == "done":
                return TrialResult(
                    ok=True,
                    seconds=round(loaded["load_ms"] / 1000 + time.monotonic() - sent, 3),
                    sample_text="".join(pieces),
                    prompt_tokens=message["prompt_tokens"],
                )
            elif message["type"] == "error":
                return self._failed(runner.with_output(message["reason"]))

    async def _next(self, replies: asyncio.Queue[RunnerMessage | Exited]) -> RunnerMessage | Exited:
        left = self.timeout - (time.monotonic() - self.started)
        try:
            return await asyncio.wait_for(replies.get(), max(left, 0.0))
        except TimeoutError:
            raise BackendError(
                f"The trial load did not finish within {self.timeout:g} s. The machine may be "
                "too slow or too busy for this model; try again when it is less busy."
            ) from None

    async def _unless_stopped(self, runner: RunnerProcess, work: Awaitable[T]) -> T:
        """``work``'s result, unless ``stop`` is called first: then the runner is killed and
        ``_Stopped`` raised with the reason given."""
        assert self._stopping is not None
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            return task.result()
        task.cancel()
        runner.kill()
        raise _Stopped(self._stop_reason or "The trial load was stopped.")

    def _failed(self, reason: str) -> TrialResult:
        return TrialResult(ok=False, seconds=time.monotonic() - self.started, error=reason)
