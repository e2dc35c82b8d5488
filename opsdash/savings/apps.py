from __future__ import annotations

from django.apps import AppConfig


class SavingsConfig(AppConfig):
    name = "opsdash.savings"
    label = "savings"
