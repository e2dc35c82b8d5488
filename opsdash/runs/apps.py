from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "opsdash.runs"
    label = "runs"
    verbose_name = "Run ledger"
