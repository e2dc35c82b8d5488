from __future__ import annotations

from django.urls import path

from opsdash.telemetry import views

app_name = "telemetry"
urlpatterns = [
    path("", views.index, name="index"),
    path("thresholds", views.thresholds, name="thresholds"),
]
