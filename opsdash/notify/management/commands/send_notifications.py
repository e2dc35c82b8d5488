"""``manage.py send_notifications``: deliver the queued notifications that are due, once.

Every web process already runs a sender thread; this is for a deployment that wants delivery
without a web process up (or a belt-and-braces cron). It is safe beside running servers: each
delivery is claimed by one sender. cron, every minute::

    * * * * *  cd /srv/opsdash && .venv/bin/python manage.py send_notifications

or a systemd timer with ``OnCalendar=*-*-* *:*:00`` running it as a ``Type=oneshot`` service
(see ``send_reports`` for the unit files).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from opsdash.notify.models import Delivery, DeliveryStatus
from opsdash.notify.sender import BATCH, deliver_due


class Command(BaseCommand):
    help = (
        "Send the alert deliveries that are due (email and webhooks), retrying failed ones on "
        "their backoff; prints how many were attempted and how many are still waiting."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rounds", type=int, default=20, help="at most this many batches of 50 (default 20)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        attempted = 0
        for _ in range(max(1, options["rounds"])):
            done = deliver_due()
            attempted += done
            if done < BATCH:
                break
        waiting = Delivery.objects.filter(status=DeliveryStatus.PENDING).count()
        failed = Delivery.objects.filter(status=DeliveryStatus.FAILED).count()
        self.stdout.write(
            f"{attempted} {'delivery' if attempted == 1 else 'deliveries'} attempted; "
            f"{waiting} waiting to retry; {failed} failed for good."
        )
