"""Background jobs inside the web process: installs, and suite runs.

Installs copy or download gigabytes and trial-load the model, far too long for a request. Thread
pools run them; their progress lives in the database, so any page (or another web process) can
show it. Threads are enough: the heavy work is I/O, hashing (which releases the GIL) and a
subprocess.

One pool per purpose (a lane). URL downloads spend their time waiting on someone else's server,
sometimes for hours (a slow mirror, a multi-GB file), and one pool shared with everything else
let two slow downloads hold every worker while a path install that needs seconds waited behind
them. So downloads get the ``download`` lane (``OPSDASH_DOWNLOAD_WORKERS``), installs whose
bytes are already here (path copies, finished uploads) the ``local`` lane
(``OPSDASH_INSTALL_WORKERS``), and suite runs, which generate for minutes, the ``suite`` lane
(as many workers as the local lane), so a long suite never holds up an install. A lane that is
full only delays more of its own kind. Separate pools rather than one bigger pool with
per-purpose limits: the same guarantee with no bookkeeping of our own.

The pools are a background service (``opsdash.core.background``, registered by the catalog's
``AppConfig.ready()``): ``shutdown`` stops them, ``reset_after_fork`` forgets a parent's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)


class Lane(StrEnum):
    LOCAL = "local"
    DOWNLOAD = "download"
    SUITE = "suite"


_lock = threading.Lock()
_executors: dict[Lane, ThreadPoolExecutor] = {}
_pending: set[Future[None]] = set()


def _run(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        fn(*args)
    except Exception:
        logger.exception("background job %s crashed", getattr(fn, "__name__", fn))
    finally:
        connection.close()


def _workers(lane: Lane) -> int:
    if lane == Lane.DOWNLOAD:
        return int(settings.DOWNLOAD_WORKERS)
    return int(settings.INSTALL_WORKERS)


def _executor(lane: Lane) -> ThreadPoolExecutor:
    # Under _lock.
    executor = _executors.get(lane)
    if executor is None:
        executor = _executors[lane] = ThreadPoolExecutor(
            max_workers=_workers(lane), thread_name_prefix=f"opsdash-{lane}"
        )
    return executor


def submit(fn: Callable[..., None], *args: Any, lane: Lane = Lane.LOCAL) -> None:
    """Run ``fn(*args)`` on ``lane``'s pool (``local`` unless it waits on the network)."""
    with _lock:
        future = _executor(lane).submit(_run, fn, args)
        _pending.add(future)
    future.add_done_callback(_pending.discard)


def start() -> None:
    """Start every lane's pool (each also starts on its first job)."""
    with _lock:
        for lane in Lane:
            _executor(lane)


def drain(timeout: float | None = None) -> bool:
    """Wait for the jobs submitted so far, and those they submit (an install's suite runs);
    True when all finished within ``timeout`` seconds (tests, shutdown)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: set[Future[None]] = set()
    while True:
        with _lock:
            futures = set(_pending) - seen
        if not futures:
            return True
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, not_done = wait(futures, timeout=left)
        if not_done:
            return False
        seen |= futures


def shutdown() -> None:
    """Stop the pools: jobs not started yet are dropped (recovery settles their records at the
    next start), jobs under way finish in their threads. The next job starts a new pool."""
    with _lock:
        executors = list(_executors.values())
        _executors.clear()
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)


def reset_after_fork() -> None:
    """Forget the parent's pools and jobs: their threads did not survive the fork."""
    global _lock
    _lock = threading.Lock()
    _executors.clear()
    _pending.clear()
