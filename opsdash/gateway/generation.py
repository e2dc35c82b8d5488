"""A run executing in a task of its own, its text handed over through a queue.

Why a task: a gateway view must answer with the right HTTP status (429 busy, 503 cannot load)
before it commits to a ``200`` stream, so it waits for the first text or the end; and when the
client goes away, the generation must be told to stop (``cancel``), not killed, so the run is
recorded ``cancelled`` with its text *and* its token counts from the runner's final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import close_old_connections

from opsdash.runs.models import Run
from opsdash.runs.services import execute_run

#: How long an abandoned generation may take to stop and be recorded before the request ends.
STOP_GRACE_SECONDS = 15

# Tasks are only weakly referenced by the event loop; these keep running ones alive.
_running: set[asyncio.Task[Run]] = set()
_orm_context: tuple[int, contextvars.Context] | None = None


async def _generation_context() -> contextvars.Context:
    """A fresh context whose thread-sensitive ORM calls go to one long-lived thread.

    Not a copy of the request's context: that may carry the executor of the sync middleware
    thread that called the view, which quits as soon as the view returns its streaming
    response, long before the run is finalized. Not asgiref's global shared thread either:
    a sync middleware run by a handler without a thread-sensitive context (Django's test
    ``AsyncClient``) waits on that very thread for the view, which would then deadlock. So
    generations get a ``ThreadSensitiveContext`` of their own, entered once per process and
    never left: its one thread serves every generation's ORM calls, with no thread started
    per request. Per process, because a forked process inherits the executor but not its
    thread.
    """
    global _orm_context
    if _orm_context is None or _orm_context[0] != os.getpid():
        context = contextvars.Context()
        await asyncio.create_task(ThreadSensitiveContext().__aenter__(), context=context)
        _orm_context = (os.getpid(), context)
    return _orm_context[1].copy()


class Generation:
    """``execute_run(run)`` in a task of its own. See the module docstring."""

    def __init__(self, run: Run, context: contextvars.Context) -> None:
        self.run_id = run.pk
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._ended = False
        self._cancel = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._execute(run), context=context)
        _running.add(self._task)
        self._task.add_done_callback(_running.discard)

    @classmethod
    async def start(cls, run: Run) -> Generation:
        """Start generating ``run`` now, on the running loop."""
        return cls(run, await _generation_context())

    async def _execute(self, run: Run) -> Run:
        try:
            return await execute_run(run, on_token=self._on_token, cancel=self._cancel)
        finally:
            self._pieces.put_nowait(None)
            # That thread sees no request_started / request_finished, so its database
            # connection is checked here the way Django checks a request's (CONN_MAX_AGE).
            await sync_to_async(close_old_connections)()

    async def _on_token(self, text: str) -> None:
        self._pieces.put_nowait(text)

    async def next_text(self) -> str | None:
        """The text generated since the last call, waiting for some; None once it has ended.

        Text that piled up while the caller was busy comes back as one piece, so a slow
        client gets fewer, larger chunks instead of falling further behind.
        """
        if self._ended:
            return None
        piece = await self._pieces.get()
        if piece is None:
            self._ended = True
            return None
        parts = [piece]
        while not self._pieces.empty():
            more = self._pieces.get_nowait()
            if more is None:
                self._ended = True
                break
            parts.append(more)
        return "".join(parts)

    async def result(self) -> Run:
        """The finalized run (``execute_run`` never raises for a failed generation).

        If the caller is cancelled while waiting (the client disconnected), the generation is
        stopped and recorded before the cancellation goes on.
        """
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            await self.abandon()
            raise

    async def abandon(self) -> None:
        """Stop the generation if it is still going, and wait until its run is recorded."""
        if self._task.done():
            return
        self._cancel.set()
        await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)

    def abandon_from_any_thread(self) -> None:
        """Ask the generation to stop without waiting; safe from a thread outside the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
            self._loop.call_soon_threadsafe(self._cancel.set)
