from __future__ import annotations

from django.apps import AppConfig


class SavingsConfig(AppConfig):
    name = "opsdash.savings"
    label = "savings"

    def ready(self) -> None:
        from opsdash.runs import finalizers, workflows
        from opsdash.savings.metrics import SavingsCollector
        from opsdash.savings.services import WorkflowCosting, price_run, record_pricing_failure
        from opsdash.telemetry import collectors

        # Error policy: a pricing failure is rolled back and logged, and recorded on the run as
        # a failed cost with its reason (shown as unpriced with the error); the run is still
        # finalized with its own status.
        finalizers.register(price_run, on_failure=record_pricing_failure)
        # Error policy: a refused baseline (no price in effect) or electricity price refuses
        # the workflow's create or edit with its sentence; nothing is written.
        workflows.costings.register(WorkflowCosting())
        # Error policy: a failing collector fails the scrape with a 500 (collectors.py).
        collectors.collectors.register(SavingsCollector)
