"""OpsDash served by uvicorn in a child process against the test database: the one live server
the browser, gateway, telemetry and body-limit tests share.

The child is forked, so it sees this process's settings (the test database, ALLOWED_HOSTS, a
test's ``settings`` overrides) and the rows already committed. It listens on a socket this
process bound to a free port, so the URL is known before the child starts, and it says it is
ready once uvicorn has run lifespan startup and is accepting. SIGTERM ends it the way it ends in
production (uvicorn's graceful shutdown, lifespan shutdown).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections

START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 15
#: What `make run` gives uvicorn (--timeout-graceful-shutdown): a request the stop signal could
#: not end is cancelled after this, so the server stops as it does in production.
GRACEFUL_SHUTDOWN_SECONDS = 4


@dataclass(frozen=True)
class LiveServer:
    url: str
    pid: int

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def written(self) -> int:
        """Bytes the server process has passed to write() so far, to files and sockets alike:
        how a test tells that a body was stored once, twice or not at all."""
        import psutil

        return int(psutil.Process(self.pid).io_counters().write_chars)


def prepare_server_process() -> None:
    """Runs in the forked child: use the test database, start afresh what a fork cannot keep."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync
    from channels.testing.live import set_database_connection

    from opsdash.core import background

    # The SQLite connections the parent's other threads held (asgiref's executors keep one
    # each) come across the fork as garbage. Finalized later, in the middle of this process's
    # own transaction, their close() would drop this process's locks on the database (POSIX
    # locks belong to the process: closing any descriptor of the file releases them all), so
    # finalize them now, while this process holds none.
    gc.collect()
    set_database_connection()
    # Threads do not survive a fork: every background service starts afresh in the child.
    background.reset_after_fork()
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


def _application() -> Any:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from opsdash.asgi import application

    return ASGIStaticFilesHandler(application)


def _child(sock: socket.socket, setup: Callable[[], None] | None, ready: Any) -> None:
    import uvicorn

    prepare_server_process()
    if setup is not None:
        setup()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                ready.set()

    config = uvicorn.Config(
        _application(),
        lifespan="auto",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    Server(config).run(sockets=[sock])


@contextlib.contextmanager
def serve(setup: Callable[[], None] | None = None) -> Iterator[LiveServer]:
    """Serve OpsDash in a child process until the block ends; ``setup`` runs in the child first."""
    # The child must not inherit an open SQLite handle: a connection shared across a fork reads
    # stale or broken pages. Close ours; both sides reconnect on their next query. close_all()
    # reaches only this thread's connections, so stop the threads an earlier test may have left
    # running here (the sampler, the node health sweep, the notification sender, the batch
    # worker: each holds or opens one; each starts again on first use or at the next server's
    # startup).
    from opsdash.fleet.health import stop_sweeper
    from opsdash.gateway.batch_worker import stop_worker
    from opsdash.notify.sender import stop_sender
    from opsdash.telemetry.sampler import stop_sampler

    stop_sampler()
    stop_sweeper()
    stop_sender()
    stop_worker()
    connections.close_all()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_child, args=(sock, setup, ready), daemon=True)
    child.start()
    sock.close()  # the child holds its own copy
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ready.wait(timeout=0.2):
            if not child.is_alive():
                pytest.fail(f"the uvicorn test server exited while starting ({child.exitcode})")
            if time.monotonic() > deadline:
                pytest.fail(f"the uvicorn test server did not start in {START_TIMEOUT_SECONDS} s")
        assert child.pid is not None
        yield LiveServer(url=f"http://127.0.0.1:{port}", pid=child.pid)
    finally:
        child.terminate()
        child.join(STOP_TIMEOUT_SECONDS)
        if child.is_alive():
            child.kill()
            child.join(5)
