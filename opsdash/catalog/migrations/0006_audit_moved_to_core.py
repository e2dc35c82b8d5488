# The catalog's audit entries now live in the one log (core.AuditEntry); core 0002 copied them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0005_one_live_record_per_sha256"),
        ("core", "0002_copy_catalog_and_savings_audit"),
    ]

    operations = [migrations.DeleteModel(name="AuditEntry")]
