from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_runner_cpu"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="pid_started_at",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
