from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "opsdash.fleet"
    label = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from opsdash.catalog import hooks
        from opsdash.core import background
        from opsdash.fleet import agent_installs, health, placements, statuses
        from opsdash.telemetry import node_status

        # The hub's health sweep (fleet mode only; start is a no-op otherwise). Stopping it
        # is a join of at most one sweep; a failed sweep is logged and retried, never fatal.
        background.register(
            "fleet health sweep",
            start=health.start_sweeper,
            stop=health.stop_sweeper,
            reset_after_fork=health.reset_after_fork,
            at_startup=True,
        )
        # A retired model leaves every node (a failing hook is logged; the retire stands), and
        # the catalog's model JSON and page say where a model runs without importing the fleet.
        hooks.after_retire.register(placements.remove_model_placements)
        hooks.placements_of.register(placements.placements_of)
        # POST /api/models with "node": installed on that node (a refusal is the answer).
        hooks.node_installers.register(agent_installs.install_on_node)
        # The telemetry page's node cards show each node's recorded status (a failing source is
        # logged and the cards fall back to the frames' age).
        node_status.status_sources.register(statuses.node_statuses)
