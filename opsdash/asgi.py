"""ASGI entry point: HTTP through Django, websockets through Channels (routes added by apps)."""

from __future__ import annotations

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.db import DatabaseError  # noqa: E402

from opsdash.catalog.services import recover_interrupted_installs  # noqa: E402
from opsdash.routing import websocket_urlpatterns  # noqa: E402

# A crash mid-install leaves a .partial file and an `installing` record: settle both before
# serving, so nothing is silently left half-done. Daphne has no lifespan hook, so it runs here.
try:
    recover_interrupted_installs()
except DatabaseError as exc:  # not migrated yet: serve anyway, /healthz will say what is wrong
    logging.getLogger("opsdash").warning("Skipped install recovery: %s (run migrate).", exc)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
