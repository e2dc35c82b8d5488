"""Websocket routes; each app contributes its own."""

from __future__ import annotations

from opsdash.fleet.routing import websocket_urlpatterns as fleet
from opsdash.playground.routing import websocket_urlpatterns as playground
from opsdash.telemetry.routing import websocket_urlpatterns as telemetry

websocket_urlpatterns = [*playground, *telemetry]
#: Authenticated by their own first message, not by a browser's cookie and Origin (asgi.py).
agent_websocket_urlpatterns = [*fleet]
