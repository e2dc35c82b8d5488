"""The process's one model supervisor.

``inference.runtime.supervisor.Supervisor`` runs its own event loop in a thread and may be
called from any loop (the server's, a sync view's ``async_to_sync``, a test's), so one shared
instance per process is all Django needs. The server's lifespan shutdown (``opsdash.asgi``) ends it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import async_to_sync
from django.conf import settings

from inference.runtime.supervisor import RunnerStatus, Supervisor

#: How long a runner gets to exit at shutdown before it is killed. A runner leaves within a
#: token; one stuck in native code must not hold the server past its 10 s stop, which is
#: uvicorn's --timeout-graceful-shutdown (4 s, the Makefile) plus this plus moments.
SHUTDOWN_GRACE_SECONDS = 3.0

_lock = threading.Lock()
_supervisor: Supervisor | None = None


def reset_after_fork() -> None:
    """In a forked child: forget the parent's supervisor, whose thread did not survive."""
    global _supervisor, _lock
    _supervisor, _lock = None, threading.Lock()
    _labels.clear()


def get_supervisor() -> Supervisor:
    """The shared supervisor, created on first use with the configured limits."""
    global _supervisor
    with _lock:
        if _supervisor is None:
            _supervisor = Supervisor(
                memory_budget_bytes=settings.MEMORY_BUDGET_BYTES,
                idle_unload_seconds=settings.IDLE_UNLOAD_SECONDS,
                queue_depth=settings.QUEUE_DEPTH,
            )
        return _supervisor


def interrupt_supervisor() -> None:
    """The first step of a shutdown: end every generation in flight now, each run recorded
    ``interrupted`` with its text so far by the request that started it, and start no runner.

    Takes no lock and does not wait, so a signal handler may call it.
    """
    current = _supervisor
    if current is not None:
        current.interrupt()
    if settings.FLEET:
        from opsdash.fleet import remote  # the generations this hub process awaits on nodes

        remote.interrupt()


async def close_supervisor(grace: float = SHUTDOWN_GRACE_SECONDS, *, final: bool = False) -> None:
    """The last step of a shutdown (or of a test): end the generations in flight, then stop
    every runner, killing one still there after ``grace`` seconds, and the supervisor's thread.

    The next ``get_supervisor()`` starts a new one; after a ``final`` close (the server's) it
    returns the closed one, which refuses every request, so nothing starts a runner again.
    """
    global _supervisor
    if final:
        current: Supervisor | None = get_supervisor()
    else:
        with _lock:
            current, _supervisor = _supervisor, None
    if current is not None:
        await current.close(grace, final=final)


def stop_supervisor() -> None:
    """``close_supervisor`` for sync code (tests, management commands)."""
    async_to_sync(close_supervisor)()


@dataclass(frozen=True)
class LoadedRunner:
    """One loaded model's runner process, as other apps (telemetry) may read it."""

    model_id: int
    name: str
    slug: str
    pid: int
    rss_bytes: int
    loaded_at: datetime | None
    last_used_at: datetime | None
    queue_length: int
    state: str

    @classmethod
    def of(cls, status: RunnerStatus, *, name: str, slug: str) -> LoadedRunner:
        """A supervisor's runner, named as the caller knows its model (the catalog here, the
        node's own index on a fleet agent)."""
        return cls(
            model_id=status.model_id,
            name=name,
            slug=slug,
            pid=status.pid,
            rss_bytes=status.rss_bytes,
            loaded_at=status.loaded_at,
            last_used_at=status.last_used_at,
            queue_length=status.queue_length,
            state=status.state,
        )


_labels: dict[tuple[int, int], tuple[str, str]] = {}  # (model id, pid) → (name, slug)


def loaded_runners() -> list[LoadedRunner]:
    """The runner processes of this process's supervisor with their models' names; none
    before the first model is used (it does not create a supervisor just to list nothing).

    A name is read from the catalog once per runner process; while the database cannot say
    (locked, or the model deleted under its runner) the runner is listed as ``model <id>``.
    """
    supervisor = _supervisor
    if supervisor is None:
        return []
    statuses = supervisor.status()
    live = {(s.model_id, s.pid) for s in statuses}
    for gone in [key for key in _labels if key not in live]:
        del _labels[gone]
    missing = [model_id for model_id, pid in live if (model_id, pid) not in _labels]
    if missing:
        from django.db import DatabaseError

        from opsdash.catalog.models import LocalModel

        try:
            rows = LocalModel.objects.filter(pk__in=missing).values_list("pk", "name", "slug")
            found = {pk: (name, slug) for pk, name, slug in rows}
            _labels.update({key: found[key[0]] for key in live if key[0] in found})
        except DatabaseError:
            pass
    out = []
    for s in statuses:
        name, slug = _labels.get((s.model_id, s.pid), (f"model {s.model_id}", str(s.model_id)))
        out.append(LoadedRunner.of(s, name=name, slug=slug))
    return out
