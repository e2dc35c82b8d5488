"""Background install jobs inside the web process.

Installs copy or download gigabytes and trial-load the model, far too long for a request. Thread
pools run them; their progress lives in the database, so any page (or another web process) can
show it. Threads are enough: the heavy work is I/O, hashing (which releases the GIL) and a
subprocess.

Two lanes, each its own pool. URL downloads spend their time waiting on someone else's server,
sometimes for hours (a slow mirror, a multi-GB file), and one pool shared with everything else
let two slow downloads hold every worker while a path install that needs seconds waited behind
them. So downloads get the ``download`` lane (``OPSDASH_DOWNLOAD_WORKERS``) and everything whose
bytes are already here (path copies, finished uploads, suite runs) the ``local`` lane
(``OPSDASH_INSTALL_WORKERS``). A lane that is full only delays more of its own kind, and the
download deadline and minimum rate bound how long that can be. Separate pools rather than one
bigger pool with per-purpose limits: the same guarantee with no bookkeeping of our own.
"""

from __future__ import annotations

import logging
import threading
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


def submit(fn: Callable[..., None], *args: Any, lane: Lane = Lane.LOCAL) -> None:
    """Run ``fn(*args)`` on ``lane``'s pool (``local`` unless it waits on the network)."""
    with _lock:
        executor = _executors.get(lane)
        if executor is None:
            executor = _executors[lane] = ThreadPoolExecutor(
                max_workers=_workers(lane), thread_name_prefix=f"opsdash-{lane}"
            )
        future = executor.submit(_run, fn, args)
        _pending.add(future)
    future.add_done_callback(_pending.discard)


def drain(timeout: float | None = None) -> bool:
    """Wait for the jobs submitted so far; True when all finished (tests, shutdown)."""
    with _lock:
        futures = set(_pending)
    done, not_done = wait(futures, timeout=timeout)
    return not not_done
