from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.runs.models import Workflow
from opsdash.savings.money import nano_to_str
from opsdash.savings.recompute import recompute_savings
from opsdash.savings.services import CostingRefused


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date like 2025-01-31.") from None


class Command(BaseCommand):
    help = (
        "Re-price the runs that started in a range of report days with today's price book and "
        "workflow baselines, rebuild those days' rollups, and write an audit entry. Costs are "
        "otherwise frozen when a run finishes; this is the only way to change them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--to", dest="end", required=True, help="last day, inclusive")
        parser.add_argument("--workflow", help="only this workflow (slug)")
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would change, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = None
        if options["workflow"]:
            workflow = Workflow.objects.filter(slug=options["workflow"]).first()
            if workflow is None:
                raise CommandError(f"There is no workflow {options['workflow']!r}.")
        try:
            result = recompute_savings(
                start=_day(options["start"]),
                end=_day(options["end"]),
                workflow=workflow,
                dry_run=options["dry_run"],
            )
        except CostingRefused as exc:
            raise CommandError(exc.reason) from exc
        verb = "would re-price" if result.dry_run else "re-priced"
        self.stdout.write(
            f"{result.runs} run(s): {verb} {result.changed}, newly costed {result.newly_costed}; "
            f"avoided {nano_to_str(result.avoided_before)} → {nano_to_str(result.avoided_after)} "
            f"USD, local {nano_to_str(result.local_before)} → {nano_to_str(result.local_after)} USD"
        )
        if result.dry_run:
            self.stdout.write("Dry run: nothing was changed.")
