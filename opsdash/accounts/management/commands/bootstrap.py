from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from opsdash.accounts.services import create_demo_users
from opsdash.catalog.services import recover_interrupted_installs


class Command(BaseCommand):
    help = "Prepare a fresh install: settle interrupted installs; with --demo, create demo users."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo", action="store_true", help="create the users admin, operator and manager"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        recovered = recover_interrupted_installs()
        if recovered:
            self.stdout.write(f"Marked {recovered} interrupted install(s) as failed.")
        if not options["demo"]:
            return
        password = settings.DEMO_PASSWORD or secrets.token_urlsafe(12)
        users = create_demo_users(password=password)
        created = [u.username for u in users if u.created]
        if not created:
            self.stdout.write("Demo users admin, operator and manager already exist.")
            return
        shown = password if not settings.DEMO_PASSWORD else "(from OPSDASH_DEMO_PASSWORD)"
        self.stdout.write(
            self.style.SUCCESS(
                f"Created demo users {', '.join(created)} with the password: {shown}"
            )
        )
        self.stdout.write("This password is shown once; keep it somewhere safe.")
