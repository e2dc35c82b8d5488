from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "opsdash.catalog"
    label = "catalog"
    verbose_name = "Model catalog"

    def ready(self) -> None:
        from opsdash.catalog import jobs
        from opsdash.core import background

        # Stopped first at shutdown: queued jobs are dropped (recovery settles them at the next
        # start); jobs under way finish in their threads.
        background.register(
            "job pools",
            start=jobs.start,
            stop=jobs.shutdown,
            reset_after_fork=jobs.reset_after_fork,
        )
