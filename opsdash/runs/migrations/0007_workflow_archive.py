from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_run_node"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflow",
            name="archived_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
