from __future__ import annotations

from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "opsdash.limits"
    label = "limits"

    def ready(self) -> None:
        from opsdash.limits.services import count_run
        from opsdash.runs import finalizers

        # Error policy: a counting failure is rolled back and logged (finalizers.py); the run is
        # still finalized with its own status and its cost, and its tokens are missing from the
        # limits' counters until the limits are next set (which recounts from the ledger).
        # Registered after savings' finalizer (INSTALLED_APPS order), so run.cost is there.
        # A failing budget alert is caught inside count_run: it never loses the counts.
        finalizers.register(count_run)
