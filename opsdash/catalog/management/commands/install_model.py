from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.catalog import services
from opsdash.catalog.models import ModelStatus, SourceKind


class Command(BaseCommand):
    help = "Install a model file from a server path (inside OPSDASH_MODEL_ROOTS) or an http(s) URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("location", help="a path inside OPSDASH_MODEL_ROOTS, or an http(s) URL")
        parser.add_argument("--sha256", default="", help="the expected sha256 of the file")
        parser.add_argument("--name", default="", help="a display name (default: the file name)")
        parser.add_argument(
            "--model-type", default="", help="ctransformers model type (legacy GGML)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        location: str = options["location"]
        kind = SourceKind.URL if "://" in location else SourceKind.PATH
        source = services.InstallSource(
            kind, location, options["sha256"], options["name"], options["model_type"]
        )
        try:
            model = services.install_model(source=source, user=None)
        except services.InstallRefused as exc:
            raise CommandError(exc.reason) from exc
        if model.status != ModelStatus.READY:
            raise CommandError(f"Install failed: {model.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Installed {model.name} (id {model.pk}): {model.architecture or model.format}, "
                f"{model.quantization}, sha256 {model.sha256}, runs on {model.backend}."
            )
        )
