from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.core.backup import BackupRefused, restore_backup


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup` into this data folder's database (it must "
        "be empty unless --force), migrate it forward and check the model files by sha256."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the .tar.gz that `manage.py backup` printed")
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace a database that already holds users, models or runs (stop the server "
            "first)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            restored = restore_backup(
                path=Path(options["file"]), force=options["force"], on_progress=self.stdout.write
            )
        except BackupRefused as refused:
            raise CommandError(refused.reason) from None
        out = self.stdout.write
        manifest = restored.manifest
        out(f"Database restored as it was at {manifest['created_at']}.")
        if restored.applied_migrations:
            out(
                f"Migrated forward: {len(restored.applied_migrations)} migrations "
                f"({', '.join(restored.applied_migrations[:5])}"
                f"{' …' if len(restored.applied_migrations) > 5 else ''})."
            )
        out(f"Secret key: {restored.secret_key}.")
        for change in restored.settings_changed:
            out(f"Setting changed since the backup: {change}.")
        if restored.runs_in_flight:
            out(
                f"{restored.runs_in_flight} runs were generating when the backup was made; the "
                "server marks them interrupted when it starts."
            )
        for problem in restored.model_problems:
            what = "is missing" if problem.problem == "missing" else "does not match its sha256"
            out(
                f"Model file {what}: “{problem.name}” — copy the file with sha256 "
                f"{problem.sha256 or '(not recorded)'} back to {problem.path}."
            )
        problems = len(restored.model_problems)
        out(
            f"Restored: {restored.models_ok} model files verified, "
            + (f"{problems} to copy back (listed above)." if problems else "none missing.")
        )
