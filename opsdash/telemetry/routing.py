from __future__ import annotations

from django.urls import path

from opsdash.telemetry.consumers import TelemetryConsumer

websocket_urlpatterns = [path("ws/telemetry/", TelemetryConsumer.as_asgi())]
