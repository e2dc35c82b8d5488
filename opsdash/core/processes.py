"""Which process owns a piece of work, and whether that process is still the one running.

Interrupted work (an install, a run, a suite run) is found at startup by the process that
wrote it: a row records its host, its pid and that process's start time. A pid alone is not
enough: pids are reused (a container's server is pid 1 after every restart; a busy host wraps
around), and a hung or unrelated process holding the old pid would hide the interrupted work
forever. The start time tells the old holder of a pid from a new one.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

import psutil

#: Start times are read from /proc in clock ticks (1/100 s) plus the boot time, so two readings
#: of one process agree to well within this; two processes with one pid cannot start this close.
START_TIME_TOLERANCE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process as recovery sees it: the host, the pid, and when that pid's process started
    (seconds since the epoch; None for rows written before start times were recorded)."""

    host: str
    pid: int
    started_at: float | None


def process_start_time(pid: int) -> float | None:
    """When the process ``pid`` started (epoch seconds), or None if there is no such process."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


@functools.cache
def _identity_of(pid: int) -> ProcessIdentity:
    # Cached per pid: a forked child (a test server) has a new pid and so a new entry.
    started_at = process_start_time(pid)
    return ProcessIdentity(host=socket.gethostname(), pid=pid, started_at=started_at)


def current_process() -> ProcessIdentity:
    """This process's identity, to record on work it starts."""
    return _identity_of(os.getpid())


def is_alive(*, host: str, pid: int | None, started_at: float | None) -> bool:
    """Whether the process recorded as (``host``, ``pid``, ``started_at``) is still running.

    Only a process of this host can be checked; one of another host counts as alive (that
    host settles its own work). Without a pid the work has no owner: not alive. A start
    time that differs from the one recorded means the pid now belongs to another process: not
    alive. A row without a start time (written before they were recorded) falls back to the pid
    alone, except that this process's own pid then means an earlier process that had it.
    """
    if host != socket.gethostname():
        return True
    if not pid:
        return False
    me = current_process()
    if started_at is None:
        return pid != me.pid and psutil.pid_exists(pid)
    if pid == me.pid:
        return me.started_at is not None and _same_start(me.started_at, started_at)
    try:
        now = process_start_time(pid)
    except psutil.AccessDenied:  # it exists but may not be inspected: trust the pid
        return True
    return now is not None and _same_start(now, started_at)


def _same_start(a: float, b: float) -> bool:
    return abs(a - b) <= START_TIME_TOLERANCE_SECONDS
