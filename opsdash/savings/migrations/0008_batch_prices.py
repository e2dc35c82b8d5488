"""Batch prices on the price book, the batch rate on a run's cost, batch sums on the rollups.

The package's rows get the batch prices of the installed genai-prices (``fill_batch_prices``);
no run was priced at a batch rate before, and the rollups' batch sums start at 0 for the same
reason.
"""

from django.conf import settings
from django.db import migrations, models


def fill(apps, schema_editor):
    from opsdash.savings.catalogue import fill_batch_prices

    fill_batch_prices(apps.get_model("savings", "Price"))


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_batch"),
        ("savings", "0007_rollup_covering_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="workflowdailyrollup",
            name="sav_wrollup_by_day",
        ),
        migrations.RemoveIndex(
            model_name="workflowdailyrollup",
            name="sav_wrollup_by_workflow",
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="batch_avoided_nusd",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="batch_completion_tokens",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="batch_net_nusd",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="batch_prompt_tokens",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="batch_runs",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="price",
            name="batch_input_nusd_per_mtok",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="price",
            name="batch_output_nusd_per_mtok",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="runcost",
            name="batch_rate",
            field=models.BooleanField(
                db_default=False, default=False, help_text="priced at the baseline's batch prices"
            ),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="batch_avoided_nusd",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="batch_completion_tokens",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="batch_net_nusd",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="batch_prompt_tokens",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="batch_runs",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name="workflowdailyrollup",
            index=models.Index(
                fields=[
                    "day",
                    "workflow",
                    "node",
                    "runs",
                    "ok_runs",
                    "unpriced_runs",
                    "measured_runs",
                    "prompt_tokens",
                    "completion_tokens",
                    "avoided_nusd",
                    "local_nusd",
                    "net_nusd",
                    "energy_mj",
                    "batch_runs",
                    "batch_prompt_tokens",
                    "batch_completion_tokens",
                    "batch_avoided_nusd",
                    "batch_net_nusd",
                ],
                name="sav_wrollup_by_day",
            ),
        ),
        migrations.AddIndex(
            model_name="workflowdailyrollup",
            index=models.Index(
                fields=[
                    "workflow",
                    "node",
                    "day",
                    "runs",
                    "ok_runs",
                    "unpriced_runs",
                    "measured_runs",
                    "prompt_tokens",
                    "completion_tokens",
                    "avoided_nusd",
                    "local_nusd",
                    "net_nusd",
                    "energy_mj",
                    "batch_runs",
                    "batch_prompt_tokens",
                    "batch_completion_tokens",
                    "batch_avoided_nusd",
                    "batch_net_nusd",
                ],
                name="sav_wrollup_by_workflow",
            ),
        ),
        migrations.AddConstraint(
            model_name="price",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("batch_input_nusd_per_mtok__isnull", True),
                        ("batch_output_nusd_per_mtok__isnull", True),
                    ),
                    models.Q(
                        ("batch_input_nusd_per_mtok__gte", 0),
                        ("batch_output_nusd_per_mtok__gte", 0),
                    ),
                    _connector="OR",
                ),
                name="savings_price_batch_both_not_negative",
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
