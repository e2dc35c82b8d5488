from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "opsdash.runs"
    label = "runs"
    verbose_name = "Run ledger"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.runs import runtime
        from opsdash.runs.services import shut_down_runs

        # Stopping ends every generation (recorded interrupted) and every runner, killing one
        # that outlives its grace, then waits for those runs to be recorded.
        background.register(
            "model supervisor",
            start=runtime.get_supervisor,
            stop=shut_down_runs,
            reset_after_fork=runtime.reset_after_fork,
        )
