"""The process's one model supervisor.

``inference.supervisor.Supervisor`` runs its own event loop in a thread and may be called from
any loop (daphne's, a sync view's ``async_to_sync``, a test's), so one shared instance per
process is all Django needs.
"""

from __future__ import annotations

import threading

from asgiref.sync import async_to_sync
from django.conf import settings

from inference.supervisor import Supervisor

_lock = threading.Lock()
_supervisor: Supervisor | None = None


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


def stop_supervisor() -> None:
    """Stop every runner (tests; the supervisor also cleans up at process exit)."""
    global _supervisor
    with _lock:
        current, _supervisor = _supervisor, None
    if current is not None:
        async_to_sync(current.close)()
