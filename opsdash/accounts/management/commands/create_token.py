from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.accounts.services import create_token


class Command(BaseCommand):
    help = "Issue a personal API token for USER; the secret is printed alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label to recognise the token by")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            raise CommandError(f"There is no user {options['username']!r}.") from None
        issued = create_token(user=user, name=options["name"])
        self.stderr.write(
            f"Token “{issued.token.name}” for {user.username}; it will not be shown again:"
        )
        self.stdout.write(issued.secret)
