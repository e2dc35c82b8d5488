from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from opsdash.telemetry import services


class Command(BaseCommand):
    help = (
        "Delete per-minute telemetry and ended alert episodes older than the retention "
        "(OPSDASH_TELEMETRY_HISTORY_DAYS). The sampler also does this once an hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=None, help="keep this many days instead of the setting"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else settings.TELEMETRY_HISTORY_DAYS
        if days < 1:
            self.stderr.write("--days must be at least 1.")
            raise SystemExit(2)
        minutes, episodes = services.prune_history(days=days)
        self.stdout.write(
            f"Kept {days} days: deleted {minutes} minute rows and {episodes} alert episodes."
        )
