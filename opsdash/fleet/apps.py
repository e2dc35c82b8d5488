from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "opsdash.fleet"
    label = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from opsdash.catalog import hooks
        from opsdash.fleet import placements

        # A retired model leaves every node (a failing hook is logged; the retire stands), and
        # the catalog's model JSON and page say where a model runs without importing the fleet.
        hooks.after_retire.register(placements.remove_model_placements)
        hooks.placements_of.register(placements.placements_of)
