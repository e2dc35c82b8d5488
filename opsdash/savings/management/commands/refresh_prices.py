from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from opsdash.savings.money import format_unit_price
from opsdash.savings.pricebook import refresh_prices


class Command(BaseCommand):
    help = (
        "Compare the installed genai-prices package with the price book and add rows only for "
        "prices that changed (offline; upgrade the package to get newer prices)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = refresh_prices()
        for row in result.added:
            self.stdout.write(
                f"added {row.provider}/{row.model}: {format_unit_price(row.input_nusd_per_mtok)} "
                f"in, {format_unit_price(row.output_nusd_per_mtok)} out per Mtok, from "
                f"{row.effective_from:%Y-%m-%d %H:%M}"
            )
        for problem in result.problems:
            self.stderr.write(problem)
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(result.added)} price row(s) added, {result.unchanged} unchanged."
            )
        )
