# The rollups gain the node that ran the runs (Run.node), so savings split by node from the same
# rows. Existing rows are recomputed from the frozen run costs, split by node (what
# ``rebuild_rollups`` does, with this migration's models), so the totals stay exact.

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

_SUMS = (
    ("runs", "n_runs"),
    ("ok_runs", "n_ok"),
    ("unpriced_runs", "n_unpriced"),
    ("measured_runs", "n_measured"),
    ("prompt_tokens", "sum_prompt"),
    ("completion_tokens", "sum_completion"),
    ("avoided_nusd", "sum_avoided"),
    ("local_nusd", "sum_local"),
    ("net_nusd", "sum_net"),
    ("energy_mj", "sum_energy"),
)


def split_by_node(apps: Any, schema_editor: Any) -> None:
    from opsdash.savings.days import report_zone

    cost_model = apps.get_model("savings", "RunCost")
    daily = apps.get_model("savings", "DailyRollup")
    per_workflow = apps.get_model("savings", "WorkflowDailyRollup")
    daily.objects.all().delete()
    per_workflow.objects.all().delete()
    zero = Value(0)
    grouped = (
        cost_model.objects.annotate(report_day=TruncDate("run__started_at", tzinfo=report_zone()))
        .values("report_day", "run__workflow_id", "run__model_id", "run__node")
        .annotate(
            n_runs=Count("pk"),
            n_ok=Count("pk", filter=Q(run__status="ok")),
            n_unpriced=Count("pk", filter=Q(priced=False)),
            n_measured=Count("pk", filter=Q(energy_source="measured")),
            sum_prompt=Coalesce(Sum("run__prompt_tokens"), zero),
            sum_completion=Coalesce(Sum("run__completion_tokens"), zero),
            sum_avoided=Sum("avoided_nusd"),
            sum_local=Sum("local_nusd"),
            sum_net=Sum("net_nusd"),
            sum_energy=Sum("energy_mj"),
        )
        .order_by()
    )
    sums: dict[tuple[Any, int, str], dict[str, int]] = {}
    rows = []
    for g in grouped.iterator(chunk_size=5000):
        values = {column: int(g[key]) for column, key in _SUMS}
        key = (g["report_day"], g["run__workflow_id"], g["run__node"])
        total = sums.setdefault(key, dict.fromkeys(values, 0))
        for column, value in values.items():
            total[column] += value
        rows.append(
            daily(
                day=key[0], workflow_id=key[1], model_id=g["run__model_id"], node=key[2], **values
            )
        )
    daily.objects.bulk_create(rows, batch_size=2000)
    per_workflow.objects.bulk_create(
        (
            per_workflow(day=day, workflow_id=workflow_id, node=node, **values)
            for (day, workflow_id, node), values in sums.items()
        ),
        batch_size=2000,
    )


def merge_nodes(apps: Any, schema_editor: Any) -> None:
    """Back to one row per key without the node: each key's nodes summed into one row."""
    for name, keys in (
        ("DailyRollup", ("day", "workflow_id", "model_id")),
        ("WorkflowDailyRollup", ("day", "workflow_id")),
    ):
        table = apps.get_model("savings", name)
        merged = list(
            table.objects.values(*keys)
            .annotate(**{f"s_{column}": Sum(column) for column, _ in _SUMS})
            .order_by()
        )
        table.objects.all().delete()
        table.objects.bulk_create(
            (
                table(
                    **{k: g[k] for k in keys},
                    node="",
                    **{column: g[f"s_{column}"] for column, _ in _SUMS},
                )
                for g in merged
            ),
            batch_size=2000,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0006_audit_moved_to_core"),
        ("runs", "0006_run_node"),
        ("savings", "0004_audit_moved_to_core"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="dailyrollup",
            name="savings_rollup_one_row_per_key",
        ),
        migrations.RemoveConstraint(
            model_name="workflowdailyrollup",
            name="savings_workflow_rollup_one_row_per_key",
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="node",
            field=models.CharField(blank=True, default="", max_length=63),
        ),
        migrations.AddField(
            model_name="workflowdailyrollup",
            name="node",
            field=models.CharField(blank=True, default="", max_length=63),
        ),
        migrations.AddConstraint(
            model_name="dailyrollup",
            constraint=models.UniqueConstraint(
                fields=("day", "workflow", "model", "node"),
                name="savings_rollup_one_row_per_key_node",
            ),
        ),
        migrations.AddConstraint(
            model_name="workflowdailyrollup",
            constraint=models.UniqueConstraint(
                fields=("day", "workflow", "node"),
                name="savings_workflow_rollup_one_row_per_key_node",
            ),
        ),
        # Going back merges each key's nodes into one row first, as the old constraints need.
        migrations.RunPython(split_by_node, merge_nodes),
    ]
