"""ASGI entry point: HTTP through the body guard and Django, websockets through Channels.

Served by uvicorn (``make run``): it hands the application request bodies as they arrive, so
``BodyLimits`` refuses a body too large for its endpoint, or without the credentials it needs,
before anything stores it, and model uploads stream straight into the models disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
django.setup(set_prefix=False)

from asgiref.sync import sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.db import DatabaseError  # noqa: E402
from django.urls import re_path  # noqa: E402

from opsdash.catalog.services import recover_interrupted_installs  # noqa: E402
from opsdash.catalog.uploads import UPLOAD_PATH, upload_body_rule  # noqa: E402
from opsdash.core import background  # noqa: E402
from opsdash.core.bodylimits import BodyLimits  # noqa: E402
from opsdash.core.streamed_body import StreamingBodyASGIHandler  # noqa: E402
from opsdash.gateway.batch_api import FILES_PATH, file_body_rule  # noqa: E402
from opsdash.playground.suites import mark_interrupted_suite_runs  # noqa: E402
from opsdash.routing import agent_websocket_urlpatterns, websocket_urlpatterns  # noqa: E402
from opsdash.runs.runtime import interrupt_supervisor  # noqa: E402
from opsdash.runs.services import mark_interrupted_runs  # noqa: E402

logger = logging.getLogger("opsdash")

# Django for HTTP, the upload's body streamed to its view, every body measured on the way in.
django_asgi_app = BodyLimits(
    StreamingBodyASGIHandler(streamed_paths=[UPLOAD_PATH]),
    rules={UPLOAD_PATH: upload_body_rule, FILES_PATH: file_body_rule},
)


def settle_interrupted_work() -> None:
    """A crash mid-install leaves an `installing` record and a .partial file, a crash mid-run a
    `running` run: settle them before serving, so nothing is silently left half-done."""
    try:
        recover_interrupted_installs()
        mark_interrupted_runs()
        mark_interrupted_suite_runs()
    except DatabaseError as exc:  # not migrated yet: serve anyway, the pages will say so
        logger.warning("Skipped recovering interrupted work: %s (run migrate).", exc)


def _interrupt_on_stop_signals() -> None:
    """Make the server's SIGTERM / SIGINT handler end the generations in flight first.

    The server stops accepting at the signal but sends lifespan shutdown only once every
    request has ended, and a blocking ``POST /api/runs`` may have minutes of tokens to go.
    So the signal itself interrupts the supervisor: each run ends at once, ``interrupted``
    with its text so far, its request answers, and lifespan shutdown follows within moments.
    The server's own handler (uvicorn's, installed before lifespan startup) still runs after
    ours, and uvicorn restores its saved handlers on exit. Only Python handlers are chained, and
    only from the main thread (a server run in a test's thread has no signal handling).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            interrupt_supervisor()  # lock-free: safe inside a signal handler
            previous(signum, frame)

        signal.signal(sig, handler)


async def lifespan_startup() -> None:
    """Before the first request: settle interrupted work, and prepare for a stop signal."""
    await sync_to_async(settle_interrupted_work)()
    await sync_to_async(background.start_at_startup)()
    _interrupt_on_stop_signals()


async def lifespan_shutdown() -> None:
    """After the last request: stop every background service (``opsdash.core.background``).

    The supervisor's stop ends every generation still running (recorded ``interrupted`` by its
    request) and every runner process, killing one that does not exit within
    ``SHUTDOWN_GRACE_SECONDS``, so the server exits within 10 s; then it waits for those runs to
    be recorded (``opsdash.runs.services.shut_down_runs``).
    """
    await background.stop_all()


class Lifespan:
    """ASGI lifespan: ``lifespan_startup`` / ``lifespan_shutdown`` around the application.

    A server without lifespan events (daphne, some test servers) never calls them: then the
    first request or connection settles interrupted work instead. Importing this module must
    not touch the database (tests import it), hence no work at import time.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.settled = False
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if not self.settled:
            async with self._lock:
                if not self.settled:
                    await sync_to_async(settle_interrupted_work)()
                    self.settled = True
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await lifespan_startup()
                except Exception as exc:
                    logger.exception("OpsDash could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.settled = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await lifespan_shutdown()
                except Exception as exc:
                    logger.exception("OpsDash did not shut down cleanly")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Lifespan(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": URLRouter(
                [
                    # An agent sends no Origin and no cookie: its hello identifies it.
                    *agent_websocket_urlpatterns,
                    re_path(
                        r"",
                        AllowedHostsOriginValidator(
                            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
                        ),
                    ),
                ]
            ),
        }
    )
)
