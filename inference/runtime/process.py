"""The parent's handle on one runner process: start it, talk to it, notice when it dies.

Everything here runs on its owner's event loop (the supervisor's, or the trial load's own).
The process is started in an executor thread and its pipes are read through the loop, so
nothing blocks the loop. The pool and the trial load use it; the public face of running
models is ``inference.runtime.supervisor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import psutil

from inference.errors import BackendError
from inference.runtime.protocol import Command, LoadedMessage, RunnerMessage, RunnerSpec

logger = logging.getLogger(__name__)

#: A tokenize answer for a long prompt is one long JSON line; asyncio's default limit is 64 KiB.
LINE_LIMIT = 64 * 1024 * 1024
OUTPUT_TAIL_CHARS = 500
#: How long a runner gets to exit after ``shutdown`` before it is killed. It cancels its
#: generation within one token, so only a runner stuck in native code needs the kill.
STOP_GRACE_SECONDS = 5.0

_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE}


@dataclass(frozen=True, slots=True)
class Exited:
    """Put in the inbox and in every open request's queue when the runner's events pipe
    closes: the process has ended."""

    returncode: int


def describe_exit(returncode: int, doing: str) -> str:
    """A sentence for a runner that ended by itself: ``doing`` is e.g. "while generating"."""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
            name = sig.name
        except ValueError:
            sig, name = None, f"signal {-returncode}"
        if sig == signal.SIGKILL:
            name += " — possibly out of memory"
        elif sig in _CRASH_SIGNALS:
            name += " — a crash in the model's native code"
        return f"The model process died ({name}) {doing}."
    return f"The model process exited unexpectedly with status {returncode} {doing}."


RunnerState = Literal["starting", "idle", "busy", "stopping"]


@dataclass(frozen=True)
class RunnerStatus:
    """One runner process as measured now. Times are timezone-aware UTC datetimes.

    ``queue_length`` counts the model's generations running plus waiting, of both priorities.
    ``parallel_sequences`` is how many the runner decodes together (its ``loaded`` message
    says; 1 until then), ``active_sequences`` how many have been sent to the runner and are
    not done (the runner decides which of them it decodes now and which wait). ``loaded_at``
    and ``last_used_at`` are None while the model is still loading.
    """

    model_id: int
    pid: int
    rss_bytes: int
    loaded_at: datetime | None
    last_used_at: datetime | None
    queue_length: int
    state: RunnerState
    backend: str
    context_length: int | None
    estimated_bytes: int
    notices: tuple[str, ...] = ()
    parallel_sequences: int = 1
    active_sequences: int = 0


def _child_environment() -> dict[str, str]:
    # The child runs ``-m inference.runtime.runner``, so the folder holding this package must
    # be on its path whatever the parent's working directory is.
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


class RunnerProcess:
    """One ``python -m inference.runtime.runner`` child and its pipes.

    Many requests may be in flight at once (the runner interleaves their messages), so the
    messages are routed by ``id``: a request ``open``s its queue before its command is sent
    and ``close``s it when it has its answer; a message for no open request (a late pong, the
    end of one its owner stopped waiting for) is dropped. Messages without an id (``loaded``,
    or the error of a model that failed to load) arrive in ``inbox``. When the process ends
    (crash, kill, or ``stop``) one ``Exited`` goes to ``inbox`` and to every open queue, and
    a queue opened after that gets it at once.
    """

    def __init__(self, spec: RunnerSpec, *, on_exit: Callable[[RunnerProcess], None]) -> None:
        self.spec = spec
        self.inbox: asyncio.Queue[RunnerMessage | Exited] = asyncio.Queue()
        self._replies: dict[str, asyncio.Queue[RunnerMessage | Exited]] = {}
        self._exit: Exited | None = None
        self.pid: int | None = None
        self.loaded: LoadedMessage | None = None
        self.loaded_at: datetime | None = None
        self.last_used_at: datetime | None = None
        self.last_used_monotonic = time.monotonic()
        self.stopping = False
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self._on_exit = on_exit
        self._popen: subprocess.Popen[bytes] | None = None
        self._commands: asyncio.WriteTransport | None = None
        self._output_tail: deque[str] = deque(maxlen=40)
        self._tasks: list[asyncio.Task[None]] = []
        self._next_id = 0
        self._psutil: psutil.Process | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process (in an executor: fork and exec can take a while in a big parent)."""
        loop = asyncio.get_running_loop()
        commands_read, commands_write = os.pipe()
        events_read, events_write = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "inference.runtime.runner",
            "--commands-fd",
            str(commands_read),
            "--events-fd",
            str(events_write),
            json.dumps(self.spec),
        ]
        try:
            self._popen = await loop.run_in_executor(
                None,
                lambda: subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=(commands_read, events_write),
                    env=_child_environment(),
                    # Its own session: a Ctrl-C in the terminal stops the server, which then
                    # stops its runners; the runners do not each get a KeyboardInterrupt.
                    start_new_session=True,
                ),
            )
        except OSError as exc:
            os.close(commands_write)
            os.close(events_read)
            raise BackendError(f"The model process could not be started: {exc}.") from exc
        finally:
            # Only the child keeps these ends; the parent holding them would hide the child's
            # exit (no EOF on the events pipe).
            os.close(commands_read)
            os.close(events_write)
        self.pid = self._popen.pid
        with contextlib.suppress(psutil.Error):
            self._psutil = psutil.Process(self.pid)
        self._commands, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(commands_write, "wb", buffering=0)
        )
        events = await _reader_for(os.fdopen(events_read, "rb", buffering=0))
        assert self._popen.stdout is not None
        output = await _reader_for(self._popen.stdout)
        self._tasks = [
            asyncio.ensure_future(self._read_events(events)),
            asyncio.ensure_future(self._read_output(output)),
        ]

    async def wait_loaded(self, timeout: float) -> LoadedMessage:
        """The runner's ``loaded`` message; ``BackendError`` if it failed, died or timed out."""
        try:
            first = await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            await self.stop(grace=0)
            raise BackendError(
                f"The model did not finish loading within {timeout:g} s. The file may be too "
                "large for this machine or the disk too slow; try again when it is less busy."
            ) from None
        if isinstance(first, Exited):
            await self.collect_output()
            raise BackendError(self.with_output(describe_exit(first.returncode, "while loading")))
        if first["type"] == "loaded":
            self.loaded = first
            self.loaded_at = datetime.now(UTC)
            self.touch()
            return self.loaded
        await self.stop()
        await self.collect_output()
        if first["type"] == "error":
            reason, code = first.get("reason"), first.get("code")
        else:
            reason, code = None, None
        # The backend's sentence first; native libraries often say more on their output.
        reason = self.with_output(str(reason or "The model process failed to load the model."))
        raise BackendError(reason, code=code)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ask the runner to exit, kill it after ``grace`` seconds, and wait until it is gone."""
        self.stopping = True
        if self.returncode is None:
            self.send({"type": "shutdown"})
            if self._commands is not None:
                self._commands.close()  # EOF: the runner exits even if it missed the message
            try:
                await asyncio.wait_for(self.exited.wait(), grace)
            except TimeoutError:
                self.kill()
        await self.exited.wait()

    def kill(self) -> None:
        if self._popen is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()

    # --- talking -----------------------------------------------------------------------------

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def open(self, request_id: str) -> asyncio.Queue[RunnerMessage | Exited]:
        """The queue that receives the runner's messages about ``request_id`` from now on.

        Open it before sending the command, so no answer can arrive before it exists."""
        replies: asyncio.Queue[RunnerMessage | Exited] = asyncio.Queue()
        if self._exit is not None:
            replies.put_nowait(self._exit)  # opened after the death: learn of it at once
        self._replies[request_id] = replies
        return replies

    def close(self, request_id: str) -> None:
        """Stop receiving messages about ``request_id``; later ones are dropped."""
        self._replies.pop(request_id, None)

    @property
    def in_flight(self) -> int:
        """Requests opened and not closed: the runner owes each of them an answer."""
        return len(self._replies)

    def send(self, command: Command) -> None:
        """Queue ``command`` on the pipe; silently dropped once the runner is gone."""
        if self._commands is None or self._commands.is_closing():
            return
        self._commands.write((json.dumps(command) + "\n").encode("utf-8"))

    def touch(self) -> None:
        self.last_used_at = datetime.now(UTC)
        self.last_used_monotonic = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.returncode is None and not self.exited.is_set()

    def rss_bytes(self) -> int:
        """Resident memory measured now; 0 once the process is gone."""
        if self._psutil is None or not self.alive:
            return 0
        try:
            return int(self._psutil.memory_info().rss)
        except psutil.Error:
            return 0

    def with_output(self, reason: str) -> str:
        """``reason`` followed by the end of what the runner printed, when it printed anything."""
        tail = "".join(self._output_tail).strip()
        if len(tail) > OUTPUT_TAIL_CHARS:
            tail = "…" + tail[-OUTPUT_TAIL_CHARS:]
        return f"{reason} Last output: {tail}" if tail else reason

    # --- background readers ------------------------------------------------------------------

    async def _read_events(self, events: asyncio.StreamReader) -> None:
        try:
            while line := await events.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    logger.warning("runner %s sent a line that is not JSON: %r", self.pid, line)
                    continue
                self._route(cast(RunnerMessage, message))
        except (OSError, ValueError) as exc:  # ValueError: a line over LINE_LIMIT
            logger.warning("reading from runner %s failed: %s", self.pid, exc)
            self.kill()
        finally:
            self.returncode = await self._reap()
            if self._commands is not None:
                self._commands.close()
            self.exited.set()
            self._exit = Exited(self.returncode)
            self.inbox.put_nowait(self._exit)
            for replies in self._replies.values():
                replies.put_nowait(self._exit)
            self._on_exit(self)

    def _route(self, message: RunnerMessage) -> None:
        request_id = message.get("id")
        if request_id is None:
            self.inbox.put_nowait(message)
        elif (replies := self._replies.get(str(request_id))) is not None:
            replies.put_nowait(message)
        else:
            logger.debug("runner %s: dropped a %s for no open request", self.pid, message["type"])

    async def _read_output(self, output: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := await output.readline():
                self._output_tail.append(line.decode("utf-8", errors="replace"))

    async def collect_output(self) -> None:
        # The output pipe closes with the process; a short wait collects its last words.
        if len(self._tasks) > 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tasks[1]), 1.0)

    async def _reap(self) -> int:
        popen = self._popen
        assert popen is not None

        def wait() -> int:
            try:
                return popen.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                # The pipe closed but the process lives on: it is no use to anyone now.
                popen.kill()
                return popen.wait()

        return await asyncio.get_running_loop().run_in_executor(None, wait)


async def _reader_for(pipe: Any) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader
