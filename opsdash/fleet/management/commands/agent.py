"""``manage.py agent``: run this machine as a fleet node (``opsdash.fleet.agent``)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.fleet.agent import AgentConfig, AgentRefused, run_agent


class Command(BaseCommand):
    help = (
        "Run this machine as a node of an OpsDash fleet: dial the hub, enroll with a node "
        "token the first time (then with the saved credential), sample this machine, and run "
        "the models the hub places here. Needs no database: only the hub's URL."
    )
    # The agent has no database of its own to check, and must start without one.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hub", help="the hub's URL, e.g. https://opsdash.example.com")
        parser.add_argument("--token", help="a node token (manage.py create_node_token)")
        parser.add_argument("--name", help="this node's name (default: the host name)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = AgentConfig.from_settings(
                hub_url=options["hub"], token=options["token"], name=options["name"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        logging.getLogger("opsdash.fleet.agent").setLevel(logging.INFO)
        self.stdout.write(f"agent {config.name}: dialing {config.ws_url}")
        self.stdout.flush()
        try:
            run_agent(config)
        except AgentRefused as exc:
            raise CommandError(f"The hub refused node {config.name}: {exc.reason}") from exc
        self.stdout.write(f"agent {config.name}: stopped")
