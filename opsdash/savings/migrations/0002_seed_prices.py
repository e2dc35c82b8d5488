"""Seed the price book from the genai-prices package installed with OpsDash (offline)."""

from __future__ import annotations

from django.db import migrations


def seed(apps, schema_editor):
    from opsdash.savings.catalogue import seed_prices

    seed_prices(apps.get_model("savings", "Price"))


class Migration(migrations.Migration):
    dependencies = [("savings", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
