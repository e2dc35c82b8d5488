from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "opsdash.fleet"
    label = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.fleet import health

        # The hub's health sweep (fleet mode only; start is a no-op otherwise). Stopping it
        # is a join of at most one sweep; a failed sweep is logged and retried, never fatal.
        background.register(
            "fleet health sweep",
            start=health.start_sweeper,
            stop=health.stop_sweeper,
            reset_after_fork=health.reset_after_fork,
        )
