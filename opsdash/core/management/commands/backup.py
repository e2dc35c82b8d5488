from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.core.backup import BackupRefused, create_backup


class Command(BaseCommand):
    help = (
        "Write a consistent backup (database, manifest, secret key; not the model files) into "
        "a dated .tar.gz; its path is printed alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output", metavar="DIR", help="the folder to write into (default DATA_DIR/backups)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            backup = create_backup(
                output_dir=Path(options["output"]) if options["output"] else None
            )
        except BackupRefused as refused:
            raise CommandError(refused.reason) from None
        manifest = backup.manifest
        counts = manifest["row_counts"]
        self.stderr.write(
            f"Backed up the {manifest['engine']} database ({counts.get('runs_run', 0):,} runs, "
            f"{counts.get('catalog_localmodel', 0):,} catalog models). Model files are not in it: "
            f"{len(manifest['model_files'])} listed with their sha256 for the restore to check."
        )
        self.stdout.write(str(backup.path))
