from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("playground", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="suiterun",
            name="pid_started_at",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
