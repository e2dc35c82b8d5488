from __future__ import annotations

from django.urls import path

from opsdash.playground.consumers import PlaygroundConsumer

websocket_urlpatterns = [path("ws/playground/", PlaygroundConsumer.as_asgi())]
