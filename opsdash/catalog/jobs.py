"""Background install jobs inside the web process.

Installs copy or download gigabytes and trial-load the model, far too long for a request. A
small thread pool runs them; their progress lives in the database, so any page (or another web
process) can show it. Threads are enough: the heavy work is I/O, hashing (which releases the
GIL) and a subprocess.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future[None]] = set()


def _run(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        fn(*args)
    except Exception:
        logger.exception("background job %s crashed", getattr(fn, "__name__", fn))
    finally:
        connection.close()


def submit(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on the install pool."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opsdash-install")
        future = _executor.submit(_run, fn, args)
        _pending.add(future)
    future.add_done_callback(_pending.discard)


def drain(timeout: float | None = None) -> bool:
    """Wait for the jobs submitted so far; True when all finished (tests, shutdown)."""
    with _lock:
        futures = set(_pending)
    done, not_done = wait(futures, timeout=timeout)
    return not not_done
