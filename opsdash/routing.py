"""Websocket routes (the telemetry and playground consumers add theirs here)."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
