from __future__ import annotations

from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "opsdash.telemetry"
    label = "telemetry"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.telemetry import relay, sampler

        # Registered after the supervisor, so stopped after it: the last runs' energy is read.
        background.register(
            "telemetry sampler",
            start=sampler.get_sampler,
            stop=sampler.stop_sampler,
            reset_after_fork=sampler.reset_after_fork,
        )
        # Fleet mode: this hub process's member of the telemetry group and the minute rows of
        # the nodes whose sockets it holds (nothing runs in embedded mode).
        background.register(
            "fleet telemetry",
            start=relay.start_listener,
            stop=_stop_fleet_telemetry,
            reset_after_fork=_reset_fleet_telemetry,
            at_startup=True,
        )


def _stop_fleet_telemetry() -> None:
    from opsdash.telemetry import fleet, relay

    fleet.stop()
    relay.stop_listener()


def _reset_fleet_telemetry() -> None:
    from opsdash.telemetry import fleet, relay, store

    relay.reset_after_fork()
    fleet.reset()
    store.reset_store()
