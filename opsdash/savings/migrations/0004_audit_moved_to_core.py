# The savings audit entries now live in the one log (core.AuditEntry); core 0002 copied them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("savings", "0003_runcost_error"),
        ("core", "0002_copy_catalog_and_savings_audit"),
    ]

    operations = [migrations.DeleteModel(name="SavingsAuditEntry")]
