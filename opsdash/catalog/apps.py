from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "opsdash.catalog"
    label = "catalog"
    verbose_name = "Model catalog"
