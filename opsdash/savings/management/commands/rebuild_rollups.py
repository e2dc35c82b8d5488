from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from opsdash.savings.models import SavingsAction
from opsdash.savings.pricebook import audit
from opsdash.savings.rollups import rebuild_rollups


class Command(BaseCommand):
    help = (
        "Recompute the daily savings rollups from the runs' frozen costs (all days, or a "
        "range); use after changing OPSDASH_REPORT_TIME_ZONE. Costs themselves do not change."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", type=date.fromisoformat, default=None)
        parser.add_argument("--to", dest="end", type=date.fromisoformat, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        written = rebuild_rollups(start=options["start"], end=options["end"])
        span = f"{options['start'] or 'first day'}…{options['end'] or 'last day'}"
        audit(
            action=SavingsAction.REBUILD,
            actor=None,
            detail=f"rebuilt rollups for {span}: {written} row(s)",
        )
        self.stdout.write(self.style.SUCCESS(f"{written} rollup row(s) written for {span}."))
