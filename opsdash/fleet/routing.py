"""The agent link's websocket route. Mounted outside the browser stack (``opsdash.asgi``): an
agent has no session cookie and sends no Origin header; its hello authenticates it."""

from __future__ import annotations

from django.urls import path

from opsdash.fleet import protocol
from opsdash.fleet.consumers import AgentConsumer

websocket_urlpatterns = [path(protocol.AGENT_PATH.lstrip("/"), AgentConsumer.as_asgi())]
