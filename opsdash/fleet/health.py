"""The health sweep: a thread in each hub process that ages silent nodes every
``SWEEP_SECONDS`` (``services.sweep_node_health``).

Every hub process sweeps, so the fleet's view does not depend on any one of them staying up;
the conditional updates in the sweep record each transition once however many sweep together.
A thread, not an asyncio task: the sweep is ORM work, which must stay off the event loop.

It runs only in fleet mode, and starts on first use by the agent link (``register_node`` /
``authenticate_node``) or through ``opsdash.core.background.start_all()``; reads never wait for
it, because they age statuses themselves (``services.effective_status``).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 2.0

_lock = threading.Lock()
_stop = threading.Event()
_thread: threading.Thread | None = None


def _run(stop: threading.Event) -> None:
    from opsdash.fleet.services import sweep_node_health

    while not stop.wait(SWEEP_SECONDS):
        try:
            close_old_connections()
            for moved in sweep_node_health():
                logger.info("node %s: %s → %s", moved.node, moved.old, moved.new)
        except Exception:
            # A database restart or a lock must not end the sweep: the next round retries.
            logger.warning("the node health sweep failed; retrying", exc_info=True)
    connection.close()


def start_sweeper() -> None:
    """Start this process's sweep (idempotent; nothing in the embedded mode)."""
    global _thread, _stop
    if not settings.FLEET:
        return
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop = threading.Event()
        _thread = threading.Thread(
            target=_run, args=(_stop,), name="opsdash-fleet-sweep", daemon=True
        )
        _thread.start()


def stop_sweeper() -> None:
    global _thread
    with _lock:
        current, _thread = _thread, None
        _stop.set()
    if current is not None:
        current.join(timeout=SWEEP_SECONDS + 5)


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def reset_after_fork() -> None:
    """In a forked child: the parent's thread did not come along; start afresh on first use."""
    global _thread, _lock, _stop
    _thread, _lock, _stop = None, threading.Lock(), threading.Event()
