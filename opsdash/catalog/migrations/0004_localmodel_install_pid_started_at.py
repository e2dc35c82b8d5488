from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_audit_configure"),
    ]

    operations = [
        migrations.AddField(
            model_name="localmodel",
            name="install_pid_started_at",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
