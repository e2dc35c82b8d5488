"""ASGI entry point: HTTP through the body guard and Django, websockets through Channels.

Served by uvicorn (``make run``): it hands the application request bodies as they arrive, so
``BodyLimits`` refuses a body too large for its endpoint, or without the credentials it needs,
before anything stores it, and model uploads stream straight into the models disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
django.setup(set_prefix=False)

from asgiref.sync import sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.db import DatabaseError  # noqa: E402

from opsdash.catalog.services import recover_interrupted_installs  # noqa: E402
from opsdash.catalog.uploads import UPLOAD_PATH, upload_body_rule  # noqa: E402
from opsdash.core.bodylimits import BodyLimits  # noqa: E402
from opsdash.core.streamed_body import StreamingBodyASGIHandler  # noqa: E402
from opsdash.playground.suites import mark_interrupted_suite_runs  # noqa: E402
from opsdash.routing import websocket_urlpatterns  # noqa: E402
from opsdash.runs.services import mark_interrupted_runs  # noqa: E402

logger = logging.getLogger("opsdash")

# Django for HTTP, the upload's body streamed to its view, every body measured on the way in.
django_asgi_app = BodyLimits(
    StreamingBodyASGIHandler(streamed_paths=[UPLOAD_PATH]),
    rules={UPLOAD_PATH: upload_body_rule},
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


class SettleFirst:
    """Runs ``settle_interrupted_work`` once, before the first request or connection.

    Daphne sends no ASGI lifespan events, and importing this module must not touch the
    database (tests import it), so the first scope to arrive does the work.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.settled = False
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.settled:
            async with self._lock:
                if not self.settled:
                    await sync_to_async(settle_interrupted_work)()
                    self.settled = True
        await self.app(scope, receive, send)


application = SettleFirst(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
