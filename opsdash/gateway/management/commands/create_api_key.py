from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.gateway.services import create_api_key
from opsdash.runs.models import Workflow


class Command(BaseCommand):
    help = (
        "Issue a /v1 gateway API key for the workflow WORKFLOW_SLUG; the secret is printed "
        "alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", metavar="WORKFLOW_SLUG")
        parser.add_argument("--name", default="cli", help="a label to recognise the key by")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            workflow = Workflow.objects.get(slug=options["workflow"])
        except Workflow.DoesNotExist:
            known = ", ".join(Workflow.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(
                f"There is no workflow {options['workflow']!r} (workflows: {known})."
            ) from None
        issued = create_api_key(workflow=workflow, name=options["name"], user=None)
        self.stderr.write(
            f"API key “{issued.key.name}” for workflow {workflow.slug}; it will not be shown again:"
        )
        self.stdout.write(issued.secret)
