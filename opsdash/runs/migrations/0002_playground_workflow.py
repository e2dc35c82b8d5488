from __future__ import annotations

from django.db import migrations


def create_playground(apps, schema_editor):
    workflow = apps.get_model("runs", "Workflow")
    workflow.objects.get_or_create(
        slug="playground",
        defaults={"name": "Playground", "description": "Test prompts from the playground."},
    )


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]

    operations = [migrations.RunPython(create_playground, migrations.RunPython.noop)]
