"""Websocket routes; each app contributes its own."""

from __future__ import annotations

from opsdash.playground.routing import websocket_urlpatterns as playground

websocket_urlpatterns = [*playground]
