from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from opsdash.fleet.services import create_node_token


class Command(BaseCommand):
    help = (
        "Issue a node token, with which `manage.py agent --token` enrolls a machine; the secret "
        "is printed alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="", help="a label to recognise the token by")

    def handle(self, *args: Any, **options: Any) -> None:
        token, secret = create_node_token(name=options["name"], user=None)
        self.stderr.write(
            f"Node token “{token}”; it will not be shown again. Each node enrolls with it once "
            "and waits on the Nodes page for an admin's approval:"
        )
        self.stdout.write(secret)
