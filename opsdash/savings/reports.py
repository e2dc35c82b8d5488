"""The savings figures every page, the API and the CSV show, from one aggregation.

``aggregate_rows()`` is the only code that reads money out of the database for reports: it sums
rollup rows (integer nano-USD) grouped by any of day / workflow / model / node. Totals are sums
of its rows, so the overview, the workflow page, ``/api/savings/summary`` and the CSV
(``export.py``) cannot disagree by even a nano-dollar, and the per-node lines add up to them.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from typing import Any, Literal

from django.db import connection
from django.db.models import CharField, QuerySet, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Workflow
from opsdash.savings.days import report_today
from opsdash.savings.filters import Filters, month_start, previous_month_start
from opsdash.savings.models import DailyRollup, RunCost, WorkflowDailyRollup
from opsdash.savings.money import nano_to_str
from opsdash.savings.pricebook import has_price, open_prices
from opsdash.savings.services import Costing, costing_at

Dimension = Literal["day", "workflow", "model", "node"]
_COLUMN = {"day": "day", "workflow": "workflow_id", "model": "model_id", "node": "node"}
MAX_RANGE_DAYS = 5 * 366


@dataclass
class Figures:
    """Sums over some runs. Money in nano-USD, energy in millijoules."""

    runs: int = 0
    ok_runs: int = 0
    unpriced_runs: int = 0
    measured_runs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    avoided_nusd: int = 0
    local_nusd: int = 0
    net_nusd: int = 0
    energy_mj: int = 0
    # Of the above, the batch runs' share (the rollups' ``batch_*`` columns, same order).
    batch_runs: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    batch_avoided_nusd: int = 0
    batch_net_nusd: int = 0

    def add(self, other: Figures) -> None:
        for f in FIGURE_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    @property
    def priced_runs(self) -> int:
        return self.runs - self.unpriced_runs

    @property
    def pricing(self) -> str:
        """``priced``, ``partly_unpriced``, ``unpriced`` or ``no_runs``."""
        if not self.runs:
            return "no_runs"
        if self.unpriced_runs == self.runs:
            return "unpriced"
        return "partly_unpriced" if self.unpriced_runs else "priced"

    @property
    def energy_source(self) -> str | None:
        """``measured``, ``estimated``, ``mixed``, or None without runs."""
        if not self.runs:
            return None
        if self.measured_runs == self.runs:
            return "measured"
        return "mixed" if self.measured_runs else "estimated"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def batch_tokens(self) -> int:
        return self.batch_prompt_tokens + self.batch_completion_tokens

    def batch_json(self) -> dict[str, Any]:
        """The batch runs' share: ``{runs, prompt_tokens, completion_tokens, avoided_usd,
        net_usd}`` (included in the figures beside it, not added to them)."""
        return {
            "runs": self.batch_runs,
            "prompt_tokens": self.batch_prompt_tokens,
            "completion_tokens": self.batch_completion_tokens,
            "avoided_usd": nano_to_str(self.batch_avoided_nusd),
            "net_usd": nano_to_str(self.batch_net_nusd),
        }

    def as_json(self, *, unpriced_as_null: bool = False) -> dict[str, Any]:
        """The summary shape of DESIGN.md (money as exact decimal strings)."""
        unknown = unpriced_as_null and self.pricing == "unpriced"
        return {
            "avoided_usd": None if unknown else nano_to_str(self.avoided_nusd),
            "local_cost_usd": nano_to_str(self.local_nusd),
            "net_usd": None if unknown else nano_to_str(self.net_nusd),
            "runs": self.runs,
            "ok_runs": self.ok_runs,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "energy_joules": self.energy_mj / 1000,
            "energy_source": self.energy_source,
            "measured_runs": self.measured_runs,
            "unpriced_runs": self.unpriced_runs,
            "pricing": self.pricing,
            "batch": self.batch_json(),
        }


# The rollups' columns in the same order (``models.ROLLUP_FIGURES``; the tests hold them equal).
FIGURE_FIELDS = tuple(f.name for f in fields(Figures))


def aggregate_rows(
    *,
    start: date,
    end: date,
    by: Sequence[Dimension] = (),
    workflow_ids: Collection[int] | None = None,
    node: str = "",
    fields: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """THE aggregation: rollup sums for report days ``start``…``end`` (inclusive), one tuple
    per group: the values of ``by`` in that order, then the sums of ``fields`` (default: all
    of ``Figures``), optionally for some workflows only, or one node's runs only.

    Groupings without the local model read the per-workflow rollup (a quarter of the rows or
    fewer); the two tables hold the same sums (``rebuild_rollups`` and the tests check it).
    """
    fields = tuple(fields) or FIGURE_FIELDS
    if not by:
        rows = _rows(start=start, end=end, by=by, workflow_ids=workflow_ids, node=node)
        total = rows.aggregate(**{f"s_{f}": Sum(f) for f in fields})
        if total[f"s_{fields[0]}"] is None:
            return []
        return [tuple(int(total[f"s_{f}"]) for f in fields)]
    grouped = _grouped(
        start=start, end=end, by=by, workflow_ids=workflow_ids, node=node, fields=fields
    )
    return _dated(_fetch(grouped), by)


def _rows(
    *,
    start: date,
    end: date,
    by: Sequence[Dimension],
    workflow_ids: Collection[int] | None,
    node: str,
) -> QuerySet[Any, Any]:
    table = DailyRollup if "model" in by else WorkflowDailyRollup
    rows = table.objects.filter(day__gte=start, day__lte=end)
    if workflow_ids is not None:
        rows = rows.filter(workflow_id__in=list(workflow_ids))
    if node:
        rows = rows.filter(node=node)
    return rows


def _grouped(
    *,
    start: date,
    end: date,
    by: Sequence[Dimension],
    workflow_ids: Collection[int] | None,
    node: str,
    fields: Sequence[str],
) -> QuerySet[Any, Any]:
    """The grouped query behind every split figure."""
    rows = _rows(start=start, end=end, by=by, workflow_ids=workflow_ids, node=node)
    sums = {f"s_{f}": Sum(f) for f in fields}
    columns = [_COLUMN[d] for d in by]
    return (
        rows.values(*columns)
        .annotate(**sums)
        .order_by(*columns)
        .values_list(*columns, *sums.keys())
    )


def _fetch(rows: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The query's rows as the driver returns them, without Django's per-value converters.

    At a year of 50 workflows those converters (a date parse and a no-op call per sum, for
    each of 18 250 rows) cost more than SQLite's own work; the sums are plain integers
    (``Decimal`` on PostgreSQL: callers ``int()`` them), and the only value that needs
    converting is SQLite's text day, which ``_dated`` does once per distinct day.
    """
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _dated(rows: list[tuple[Any, ...]], by: Sequence[Dimension]) -> list[tuple[Any, ...]]:
    if "day" not in by or not rows or isinstance(rows[0][by.index("day")], date):
        return rows  # PostgreSQL hands back dates already
    at = by.index("day")
    days: dict[str, date] = {}

    def day(text: str) -> date:
        found = days.get(text)
        if found is None:
            found = days[text] = date.fromisoformat(text)
        return found

    return [(*row[:at], day(row[at]), *row[at + 1 :]) for row in rows]


def stream_rows(
    *,
    start: date,
    end: date,
    workflow_ids: Collection[int] | None = None,
    node: str = "",
    chunk_size: int = 2000,
) -> Iterator[tuple[Any, ...]]:
    """``aggregate_rows`` by day × workflow × local model × node (the CSV's grain), read as the
    caller consumes them: ``(iso day, workflow id, model id, node, *sums of FIGURE_FIELDS)``.

    That grouping is the per-model rollup's own unique key, so each group is one rollup row:
    they are read as they are, in the key's order (its index, no sort), and a year of them is
    never held in memory (a server-side cursor on PostgreSQL). The day comes as ISO text.
    """
    rows = _rows(start=start, end=end, by=("model",), workflow_ids=workflow_ids, node=node)
    return (
        rows.annotate(iso_day=Cast("day", output_field=CharField()))
        .order_by("day", "workflow_id", "model_id", "node")
        .values_list("iso_day", "workflow_id", "model_id", "node", *FIGURE_FIELDS)
        .iterator(chunk_size=chunk_size)
    )


def aggregate(
    *,
    start: date,
    end: date,
    by: Sequence[Dimension] = (),
    workflow_ids: Collection[int] | None = None,
    node: str = "",
) -> dict[tuple[Any, ...], Figures]:
    """``aggregate_rows`` as ``Figures``, keyed by the values of ``by`` (``()``: the total)."""
    width = len(by)
    rows = aggregate_rows(start=start, end=end, by=by, workflow_ids=workflow_ids, node=node)
    return {tuple(row[:width]): Figures(*(int(v) for v in row[width:])) for row in rows}


def total_of(groups: Iterable[Figures]) -> Figures:
    total = Figures()
    for figures in groups:
        total.add(figures)
    return total


# ----------------------------------------------------------------------------- reports


@dataclass
class WorkflowLine:
    workflow: Workflow
    figures: Figures
    series: list[int]  # net nano-USD per day of the range
    baseline: str
    has_price_now: bool

    @property
    def pricing(self) -> str:
        """The figures' pricing; a workflow without runs is unpriced if it has no price now."""
        if self.figures.runs:
            return self.figures.pricing
        return "priced" if self.has_price_now else "unpriced"

    def as_json(self) -> dict[str, Any]:
        data = self.figures.as_json(unpriced_as_null=True)
        data["pricing"] = self.pricing
        return {
            "slug": self.workflow.slug,
            "name": self.workflow.name,
            "baseline_provider": self.workflow.baseline_provider,
            "baseline_model": self.workflow.baseline_model,
            **data,
        }


@dataclass
class NodeLine:
    """One node's share of a report (``node`` blank: runs from before nodes were recorded)."""

    node: str
    figures: Figures

    @property
    def label(self) -> str:
        return self.node or "unrecorded"

    def as_json(self) -> dict[str, Any]:
        # Unpriced money as "0", not null, like the totals: the nodes' lines add up to them.
        return {"node": self.node, **self.figures.as_json()}


def node_lines(per_node: Mapping[str, Figures]) -> list[NodeLine]:
    """The nodes busiest first (then by name)."""
    lines = [NodeLine(node=node, figures=figures) for node, figures in per_node.items()]
    lines.sort(key=lambda line: (-line.figures.runs, line.node))
    return lines


@dataclass
class MonthComparison:
    this_month: Figures
    last_month_to_date: Figures
    last_month: Figures
    this_label: str
    last_label: str
    through_day: int

    @property
    def this_short(self) -> str:
        return f"{self.this_label[:3]} 1–{self.through_day}"

    @property
    def last_short(self) -> str:
        return f"{self.last_label[:3]} 1–{self.last_through_day}"

    last_through_day: int = 0

    def change_percent(self, name: str) -> float | None:
        before = getattr(self.last_month_to_date, name)
        now = getattr(self.this_month, name)
        if not before:
            return None
        return (now - before) * 100 / abs(before)


@dataclass
class Report:
    filters: Filters
    totals: Figures
    days: list[tuple[date, Figures]]
    workflows: list[WorkflowLine] = field(default_factory=list)
    models: list[tuple[LocalModel, Figures]] = field(default_factory=list)
    nodes: list[NodeLine] = field(default_factory=list)

    @property
    def days_net(self) -> list[int]:
        return [figures.net_nusd for _, figures in self.days]

    def as_json(self) -> dict[str, Any]:
        from django.conf import settings

        return {
            "from": self.filters.start.isoformat(),
            "to": self.filters.end.isoformat(),
            "time_zone": settings.REPORT_TIME_ZONE,
            "currency": "USD",
            "node": self.filters.node or None,
            **self.totals.as_json(),
            "workflows": [line.as_json() for line in self.workflows],
            "nodes": [line.as_json() for line in self.nodes],
        }


def _workflow_lines(
    filters: Filters,
    totals: Mapping[int, Figures],
    series: Mapping[int, list[int]],
    workflows: Sequence[Workflow],
) -> list[WorkflowLine]:
    prices = open_prices()
    no_runs = [0] * len(filters.days)
    lines = []
    for workflow in workflows:
        provider, model = workflow.baseline_provider, workflow.baseline_model
        lines.append(
            WorkflowLine(
                workflow=workflow,
                figures=totals.get(workflow.pk) or Figures(),
                series=series.get(workflow.pk) or list(no_runs),
                baseline=f"{provider}/{model}" if provider and model else "",
                has_price_now=has_price(provider, model, prices=prices),
            )
        )
    lines.sort(key=lambda line: (-line.figures.net_nusd, -line.figures.runs, line.workflow.name))
    return lines


def overview(filters: Filters) -> Report:
    """Totals, a daily series and one line per workflow (with a daily net series each).

    Three reads of the per-workflow rollup, each a single grouped scan: per workflow × node
    (folded here into the workflow lines, the node lines and the totals: a few rows per
    workflow), per day, and the daily net of each workflow for its sparkline;
    ``filters.node`` restricts all of them to that node's runs. The number of queries does not
    grow with the number of workflows (tests/savings/test_pages_speed.py counts them).
    """
    if filters.workflow is not None:
        workflows: list[Workflow] = [filters.workflow]
        ids: list[int] | None = [filters.workflow.pk]
    else:
        workflows, ids = list(Workflow.objects.all()), None
    start, end, node = filters.start, filters.end, filters.node

    per_workflow: dict[int, Figures] = {}
    per_node: dict[str, Figures] = {}
    for workflow_id, node_name, *sums in _fetch(
        _grouped(
            start=start,
            end=end,
            by=("workflow", "node"),
            workflow_ids=ids,
            node=node,
            fields=FIGURE_FIELDS,
        )
    ):
        values = [int(v) for v in sums]
        for key, into in ((workflow_id, per_workflow), (node_name, per_node)):
            found = into.get(key)
            if found is None:
                into[key] = Figures(*values)
            else:
                found.add(Figures(*values))
    per_day = {
        row[0]: Figures(*(int(v) for v in row[1:]))
        for row in aggregate_rows(start=start, end=end, by=("day",), workflow_ids=ids, node=node)
    }
    # The sparklines: each workflow's net per day, from the rollup rows themselves (one per
    # workflow, day and node: 18 250 at a year of 50 workflows on one node), summed here. Read
    # ungrouped along the day-first index they cost SQLite half what a GROUP BY does, and the
    # day comes back as text: the driver would parse each row's date, at more cost than that.
    days = filters.days
    index = {day.isoformat(): i for i, day in enumerate(days)}
    nets = (
        _rows(start=start, end=end, by=(), workflow_ids=ids, node=node)
        .annotate(iso_day=Cast("day", output_field=CharField()))
        .order_by()
        .values_list("iso_day", "workflow_id", "net_nusd")
    )
    series: dict[int, list[int]] = {}
    for day, workflow_id, net in _fetch(nets):
        points = series.get(workflow_id)
        if points is None:
            points = series[workflow_id] = [0] * len(days)
        points[index[day]] += net
    return Report(
        filters=filters,
        totals=total_of(per_workflow.values()),
        days=[(day, per_day.get(day) or Figures()) for day in days],
        workflows=_workflow_lines(filters, per_workflow, series, workflows),
        nodes=node_lines(per_node),
    )


def workflow_report(filters: Filters) -> Report:
    """One workflow's totals, daily series and per-local-model and per-node breakdowns."""
    assert filters.workflow is not None
    grid = aggregate(
        start=filters.start,
        end=filters.end,
        by=("day", "model", "node"),
        workflow_ids=[filters.workflow.pk],
        node=filters.node,
    )
    per_day: dict[date, Figures] = {d: Figures() for d in filters.days}
    per_model: dict[int, Figures] = {}
    per_node: dict[str, Figures] = {}
    for (day, model_id, node), figures in grid.items():
        per_day[day].add(figures)
        per_model.setdefault(model_id, Figures()).add(figures)
        per_node.setdefault(node, Figures()).add(figures)
    names = LocalModel.objects.in_bulk(list(per_model))
    models = sorted(
        ((names[pk], figures) for pk, figures in per_model.items()),
        key=lambda pair: -pair[1].runs,
    )
    report = Report(
        filters=filters,
        totals=total_of(grid.values()),
        days=list(per_day.items()),
        models=models,
        nodes=node_lines(per_node),
    )
    report.workflows = _workflow_lines(
        filters,
        {filters.workflow.pk: report.totals},
        {filters.workflow.pk: report.days_net},
        [filters.workflow],
    )
    return report


def month_comparison(workflow: Workflow | None = None, node: str = "") -> MonthComparison:
    """This month so far against the same days of last month, and last month whole (of one
    node's runs when ``node`` is given)."""
    today = report_today()
    this_start = month_start(today)
    last_start = previous_month_start(today)
    last_end = this_start - timedelta(days=1)
    last_same = last_start.replace(
        day=min(today.day, calendar.monthrange(last_start.year, last_start.month)[1])
    )
    ids = [workflow.pk] if workflow is not None else None

    def total(start: date, end: date) -> Figures:
        return aggregate(start=start, end=end, workflow_ids=ids, node=node).get((), Figures())

    return MonthComparison(
        this_month=total(this_start, today),
        last_month_to_date=total(last_start, last_same),
        last_month=total(last_start, last_end),
        this_label=this_start.strftime("%B %Y"),
        last_label=last_start.strftime("%B %Y"),
        through_day=today.day,
        last_through_day=last_same.day,
    )


def recent_costs(workflow: Workflow, limit: int = 20, node: str = "") -> list[RunCost]:
    """The workflow's latest costed runs (of one node, when given), with the price row each one
    used."""
    costs = RunCost.objects.filter(run__workflow=workflow)
    if node:
        costs = costs.filter(run__node=node)
    return list(
        costs.select_related("run", "run__model", "price").order_by("-run__started_at", "-run_id")[
            :limit
        ]
    )


def costing_now(workflow: Workflow) -> Costing:
    return costing_at(workflow, timezone.now())
