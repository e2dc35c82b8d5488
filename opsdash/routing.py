"""Websocket routes; each app contributes its own."""

from __future__ import annotations

from opsdash.playground.routing import websocket_urlpatterns as playground
from opsdash.telemetry.routing import websocket_urlpatterns as telemetry

websocket_urlpatterns = [*playground, *telemetry]
