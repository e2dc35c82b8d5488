"""``manage.py send_reports``: send the scheduled savings reports that are due.

Run it once a day (or more often: a period is sent once, a failed one is retried). cron::

    15 6 * * *  cd /srv/opsdash && .venv/bin/python manage.py send_reports

or a systemd timer, ``/etc/systemd/system/opsdash-reports.service``::

    [Service]
    Type=oneshot
    WorkingDirectory=/srv/opsdash
    EnvironmentFile=/etc/opsdash.env
    ExecStart=/srv/opsdash/.venv/bin/python manage.py send_reports

and ``/etc/systemd/system/opsdash-reports.timer``::

    [Timer]
    OnCalendar=*-*-* 06:15
    Persistent=true

    [Install]
    WantedBy=timers.target

(``systemctl enable --now opsdash-reports.timer``).
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.savings.models import ReportFrequency
from opsdash.savings.scheduled import send_due_reports


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--today must be a date like 2025-03-31, not {value!r}"
        ) from None


class Command(BaseCommand):
    help = (
        "Send the weekly (Monday–Sunday) and monthly savings reports due for the last complete "
        "period, once per subscription; failed ones are retried on the next run. "
        "cron: '15 6 * * * cd /srv/opsdash && .venv/bin/python manage.py send_reports'; "
        "systemd: a oneshot opsdash-reports.service running it and an opsdash-reports.timer "
        "with OnCalendar=*-*-* 06:15 and Persistent=true."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Keep the docstring's line breaks in --help (the cron and systemd examples).
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = __doc__
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--frequency", choices=ReportFrequency.values, help="only weekly or monthly reports"
        )
        parser.add_argument(
            "--today",
            type=_day,
            help="the report day to act as today, YYYY-MM-DD (default: today in the report "
            "time zone); the last complete period before it is sent",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be sent, send nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        outcomes = send_due_reports(
            frequency=options["frequency"], today=options["today"], dry_run=options["dry_run"]
        )
        if not outcomes:
            self.stdout.write("No active report subscriptions.")
        for outcome in outcomes:
            style = {"sent": self.style.SUCCESS, "failed": self.style.ERROR}.get(
                outcome.status, str
            )
            self.stdout.write(style(outcome.line()))
        if any(o.status == "failed" for o in outcomes):
            raise CommandError("Some reports failed; they are retried on the next run.")
