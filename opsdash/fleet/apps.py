from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "opsdash.fleet"
    label = "fleet"
    verbose_name = "Fleet"
