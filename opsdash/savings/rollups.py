"""Daily rollups: per workflow × local model × node × day, and per workflow × node × day.

A finalized run's figures are added to its day's rows in the transaction that prices it (one
upsert per table, so concurrent runs cannot both create a row); ``rebuild_rollups`` recomputes
the same rows from the frozen ``RunCost`` rows, and the tests hold the two equal.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.savings.days import day_start, report_day, report_zone
from opsdash.savings.models import (
    ROLLUP_FIGURES,
    DailyRollup,
    EnergySource,
    RunCost,
    WorkflowDailyRollup,
)

_ROLLUP_COLUMNS = tuple(ROLLUP_FIGURES)


def _rollup_delta(run: Run, cost: RunCost, sign: int) -> list[int]:
    batch = int(run.source == RunSource.BATCH)
    return [
        sign * value
        for value in (
            1,
            int(run.status == RunStatus.OK),
            int(not cost.priced),
            int(cost.energy_source == EnergySource.MEASURED),
            run.prompt_tokens or 0,
            run.completion_tokens or 0,
            cost.avoided_nusd,
            cost.local_nusd,
            cost.net_nusd,
            cost.energy_mj,
            batch,
            batch * (run.prompt_tokens or 0),
            batch * (run.completion_tokens or 0),
            batch * cost.avoided_nusd,
            batch * cost.net_nusd,
        )
    ]


def _as_columns(values: list[int]) -> dict[str, int]:
    return dict(zip(_ROLLUP_COLUMNS, values, strict=True))


def _upsert_sql(table_name: str, keys: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    table = quote(table_name)
    key_list = ", ".join(quote(k) for k in keys)
    columns = ", ".join(quote(c) for c in _ROLLUP_COLUMNS)
    updates = ", ".join(
        f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in _ROLLUP_COLUMNS
    )
    placeholders = ", ".join(["%s"] * (len(keys) + len(_ROLLUP_COLUMNS)))
    return (
        f"INSERT INTO {table} ({key_list}, {columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
    )


def bump_rollup(run: Run, cost: RunCost, sign: int) -> None:
    """Add (or take back) one run's figures in its day's rollup rows, creating them.

    One upsert statement per table, so two runs finalized at once cannot both insert the row.
    """
    day = connection.ops.adapt_datefield_value(report_day(run.started_at))
    delta = _rollup_delta(run, cost, sign)
    node = run.node or ""
    with connection.cursor() as cursor:
        cursor.execute(
            _upsert_sql(DailyRollup._meta.db_table, ("day", "workflow_id", "model_id", "node")),
            [day, run.workflow_id, run.model_id, node, *delta],
        )
        cursor.execute(
            _upsert_sql(WorkflowDailyRollup._meta.db_table, ("day", "workflow_id", "node")),
            [day, run.workflow_id, node, *delta],
        )


def _day_bounds(start: date | None, end: date | None) -> Q:
    bounds = Q()
    if start is not None:
        bounds &= Q(run__started_at__gte=day_start(start))
    if end is not None:
        bounds &= Q(run__started_at__lt=day_start(end + timedelta(days=1)))
    return bounds


def rebuild_rollups(*, start: date | None = None, end: date | None = None) -> int:
    """Recompute the rollup rows of the given days (all days by default) from the runs' frozen
    costs; returns the number of per-model rows written. Incremental updates must give the
    same rows in both tables."""
    zero = Value(0)
    is_batch = Q(run__source=RunSource.BATCH)
    with transaction.atomic():
        for table in (DailyRollup, WorkflowDailyRollup):
            old = table.objects.all()
            if start is not None:
                old = old.filter(day__gte=start)
            if end is not None:
                old = old.filter(day__lte=end)
            old.delete()
        grouped = (
            RunCost.objects.filter(_day_bounds(start, end))
            .annotate(report_day=TruncDate("run__started_at", tzinfo=report_zone()))
            .values("report_day", "run__workflow_id", "run__model_id", "run__node")
            .annotate(
                n_runs=Count("pk"),
                n_ok=Count("pk", filter=Q(run__status=RunStatus.OK)),
                n_unpriced=Count("pk", filter=Q(priced=False)),
                n_measured=Count("pk", filter=Q(energy_source=EnergySource.MEASURED)),
                sum_prompt=Coalesce(Sum("run__prompt_tokens"), zero),
                sum_completion=Coalesce(Sum("run__completion_tokens"), zero),
                sum_avoided=Sum("avoided_nusd"),
                sum_local=Sum("local_nusd"),
                sum_net=Sum("net_nusd"),
                sum_energy=Sum("energy_mj"),
                n_batch=Count("pk", filter=is_batch),
                sum_batch_prompt=Coalesce(Sum("run__prompt_tokens", filter=is_batch), zero),
                sum_batch_completion=Coalesce(Sum("run__completion_tokens", filter=is_batch), zero),
                sum_batch_avoided=Coalesce(Sum("avoided_nusd", filter=is_batch), zero),
                sum_batch_net=Coalesce(Sum("net_nusd", filter=is_batch), zero),
            )
            .order_by()
        )
        per_workflow: dict[tuple[date, int, str], list[int]] = {}
        written = 0
        batch: list[DailyRollup] = []
        for g in grouped.iterator(chunk_size=5000):
            values = [
                g["n_runs"],
                g["n_ok"],
                g["n_unpriced"],
                g["n_measured"],
                g["sum_prompt"],
                g["sum_completion"],
                g["sum_avoided"],
                g["sum_local"],
                g["sum_net"],
                g["sum_energy"],
                g["n_batch"],
                g["sum_batch_prompt"],
                g["sum_batch_completion"],
                g["sum_batch_avoided"],
                g["sum_batch_net"],
            ]
            key = (g["report_day"], g["run__workflow_id"], g["run__node"])
            sums = per_workflow.setdefault(key, [0] * len(values))
            for i, value in enumerate(values):
                sums[i] += value
            batch.append(
                DailyRollup(
                    day=key[0],
                    workflow_id=key[1],
                    model_id=g["run__model_id"],
                    node=key[2],
                    **_as_columns(values),
                )
            )
            if len(batch) == 2000:
                DailyRollup.objects.bulk_create(batch)
                written, batch = written + len(batch), []
        DailyRollup.objects.bulk_create(batch)
        written += len(batch)
        WorkflowDailyRollup.objects.bulk_create(
            (
                WorkflowDailyRollup(
                    day=day,
                    workflow_id=workflow_id,
                    node=node,
                    **_as_columns(sums),
                )
                for (day, workflow_id, node), sums in per_workflow.items()
            ),
            batch_size=2000,
        )
    return written
