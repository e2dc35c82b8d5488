from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "opsdash.gateway"
    label = "gateway"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.gateway import batch_worker

        # Every hub process runs batches (the leases keep two from running one batch), started
        # with the server so a batch resumes after a restart without anyone calling /v1.
        background.register(
            "batch worker",
            start=batch_worker.start_worker,
            stop=batch_worker.stop_worker,
            reset_after_fork=batch_worker.reset_after_fork,
            at_startup=True,
        )
