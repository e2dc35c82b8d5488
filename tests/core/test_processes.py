"""Which process owns a row, told by host, pid and start time, with real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from opsdash.core.processes import current_process, is_alive


@pytest.fixture
def other_process() -> Iterator[psutil.Process]:
    """A real process of this host that is not this one."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield psutil.Process(child.pid)
    finally:
        child.kill()
        child.wait()


def test_this_process_recorded_as_itself_is_alive():
    me = current_process()
    assert (me.host, me.pid) == (socket.gethostname(), os.getpid())
    assert me.started_at == pytest.approx(psutil.Process().create_time())
    assert is_alive(host=me.host, pid=me.pid, started_at=me.started_at)


def test_this_pid_with_another_start_time_was_an_earlier_process_and_is_gone():
    # A container's server is pid 1 after every restart: the pid alone would hide the old run.
    me = current_process()
    assert me.started_at is not None
    assert not is_alive(host=me.host, pid=me.pid, started_at=me.started_at - 3600)


def test_another_live_process_recorded_with_its_start_time_is_alive(other_process):
    started_at = other_process.create_time()
    assert is_alive(host=socket.gethostname(), pid=other_process.pid, started_at=started_at)


def test_a_pid_now_held_by_a_different_process_is_not_alive(other_process):
    # What a reused pid looks like: the pid exists, but its process started at another time.
    started_at = other_process.create_time() - 60
    assert not is_alive(host=socket.gethostname(), pid=other_process.pid, started_at=started_at)


def test_a_process_that_exited_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started_at = psutil.Process(child.pid).create_time()
    child.wait()
    assert not is_alive(host=socket.gethostname(), pid=child.pid, started_at=started_at)


def test_a_row_without_a_pid_has_no_owner():
    assert not is_alive(host=socket.gethostname(), pid=None, started_at=None)


def test_another_hosts_process_is_left_to_that_host():
    assert is_alive(host=socket.gethostname() + "-elsewhere", pid=1, started_at=0.0)


def test_rows_from_before_start_times_fall_back_to_the_pid(other_process):
    host = socket.gethostname()
    assert is_alive(host=host, pid=other_process.pid, started_at=None)
    assert not is_alive(host=host, pid=os.getpid(), started_at=None), "an earlier holder of our pid"
