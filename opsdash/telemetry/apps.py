from __future__ import annotations

from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "opsdash.telemetry"
    label = "telemetry"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.telemetry import sampler

        # Registered after the supervisor, so stopped after it: the last runs' energy is read.
        background.register(
            "telemetry sampler",
            start=sampler.get_sampler,
            stop=sampler.stop_sampler,
            reset_after_fork=sampler.reset_after_fork,
        )
