"""The month-end forecast: month to date, a daily rate, the projection and budgets' run-out dates.

Read from the per-workflow rollup only, in two grouped queries (the recent days by workflow, and
each workflow's first day), so the savings pages and ``/api/savings/summary`` can afford it on
every request. Money stays integer nano-USD: the projection is ``month_to_date + round(sum of the
rate days × days left / rate days)``, not a rounded rate times the days, so nothing drifts.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Min, Sum

from opsdash.limits.models import Limits
from opsdash.limits.services import BudgetState, budget_state
from opsdash.runs.models import Workflow
from opsdash.savings.days import report_day, report_today
from opsdash.savings.models import WorkflowDailyRollup
from opsdash.savings.money import div_round, nano_to_str

RATE_DAYS = 7
_SUMS = (
    "avoided_nusd",
    "net_nusd",
    "local_nusd",
    "prompt_tokens",
    "completion_tokens",
    "runs",
    "unpriced_runs",
)


@dataclass(frozen=True)
class Amounts:
    """Money in nano-USD, tokens prompt + completion, and how many runs (unpriced ones too:
    figures of unpriced runs only read "unpriced", not $0)."""

    avoided_nusd: int = 0
    net_nusd: int = 0
    local_nusd: int = 0
    tokens: int = 0
    runs: int = 0
    unpriced_runs: int = 0

    def plus(self, other: Amounts) -> Amounts:
        return Amounts(*(getattr(self, f) + getattr(other, f) for f in _FIELDS))

    def scaled(self, numerator: int, denominator: int) -> Amounts:
        """``self × numerator / denominator``, each figure rounded half away from zero."""
        return Amounts(*(div_round(getattr(self, f) * numerator, denominator) for f in _FIELDS))

    @property
    def unpriced(self) -> bool:
        return bool(self.runs) and self.unpriced_runs >= self.runs

    def as_json(self, *, unpriced: bool = False) -> dict[str, Any]:
        """Avoided and net are null when ``unpriced`` (the summary's rule for a workflow)."""
        return {
            "avoided_usd": None if unpriced else nano_to_str(self.avoided_nusd),
            "net_usd": None if unpriced else nano_to_str(self.net_nusd),
            "local_cost_usd": nano_to_str(self.local_nusd),
            "tokens": self.tokens,
        }


_FIELDS = tuple(f.name for f in fields(Amounts))


@dataclass(frozen=True)
class BudgetRunOut:
    """When a workflow's budget runs out at the daily rate (``runs_out_on`` None: ``why``)."""

    window: str
    hard: bool
    left_tokens: int | None
    left_nusd: int | None
    resets_on: date
    runs_out_on: date | None
    why: str

    def as_json(self) -> dict[str, Any]:
        left: dict[str, Any] = {}
        if self.left_tokens is not None:
            left["tokens"] = self.left_tokens
        if self.left_nusd is not None:
            left["usd"] = nano_to_str(self.left_nusd)
        return {
            "window": self.window,
            "hard": self.hard,
            "left": left,
            "resets_on": self.resets_on.isoformat(),
            "runs_out_on": self.runs_out_on.isoformat() if self.runs_out_on else None,
            "why": self.why,
        }


@dataclass(frozen=True)
class Projection:
    """Month to date, the rate over ``rate_days`` days from ``rate_from``, the month end."""

    month_to_date: Amounts
    rate_days: int  # 0: no history before today, so no rate and no projection
    rate_from: date | None
    rate_sum: Amounts  # the rate days' total (the rate is this / rate_days)
    days_left: int

    @property
    def daily_rate(self) -> Amounts | None:
        return self.rate_sum.scaled(1, self.rate_days) if self.rate_days else None

    @property
    def projected_month_end(self) -> Amounts | None:
        if not self.rate_days:
            return None
        return self.month_to_date.plus(self.rate_sum.scaled(self.days_left, self.rate_days))

    @property
    def unpriced(self) -> bool:
        """Every run it counts had no price: its money reads "unpriced", not $0."""
        return self.month_to_date.plus(self.rate_sum).unpriced

    @property
    def pricing(self) -> str:
        """``no_runs``, ``unpriced`` (every run it counts had no price) or ``priced``."""
        if not self.month_to_date.plus(self.rate_sum).runs:
            return "no_runs"
        return "unpriced" if self.unpriced else "priced"

    def as_json(self, *, unpriced_as_null: bool = False) -> dict[str, Any]:
        rate, projected = self.daily_rate, self.projected_month_end
        unknown = unpriced_as_null and self.unpriced
        return {
            "month_to_date": self.month_to_date.as_json(unpriced=unknown),
            "daily_rate": rate.as_json(unpriced=unknown) if rate else None,
            "rate_days": self.rate_days,
            "rate_from": self.rate_from.isoformat() if self.rate_from else None,
            "projected_month_end": projected.as_json(unpriced=unknown) if projected else None,
            "pricing": self.pricing,
        }


@dataclass(frozen=True)
class WorkflowForecast:
    workflow: Workflow
    projection: Projection
    budget: BudgetRunOut | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "slug": self.workflow.slug,
            "name": self.workflow.name,
            **self.projection.as_json(unpriced_as_null=True),
            "budget": self.budget.as_json() if self.budget else None,
        }


@dataclass(frozen=True)
class Forecast:
    today: date
    month_start: date
    month_end: date
    total: Projection
    workflows: list[WorkflowForecast] = field(default_factory=list)
    node: str = ""

    @property
    def days_left(self) -> int:
        return (self.month_end - self.today).days

    @property
    def method(self) -> str:
        return method_sentence(self.days_left)

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month_start.strftime("%Y-%m"),
            "today": self.today.isoformat(),
            "days_left": self.days_left,
            "time_zone": settings.REPORT_TIME_ZONE,
            "node": self.node or None,
            "method": self.method,
            **self.total.as_json(),
            "workflows": [line.as_json() for line in self.workflows],
        }


def method_sentence(days_left: int) -> str:
    """How the forecast is computed, said once wherever it is shown."""
    return (
        f"Month to date counts report days from the 1st through today. The daily rate is the "
        f"mean per day of the last {RATE_DAYS} complete days before today (fewer when the "
        f"history starts later, none without history); the month end adds that rate × the "
        f"{days_left} day(s) left after today. A budget runs out on the day its remaining "
        f"tokens or avoided USD are used up at that rate from tomorrow on, if that comes "
        f"before it resets."
    )


def _amounts(row: Mapping[str, Any]) -> Amounts:
    return Amounts(
        avoided_nusd=int(row["avoided_nusd"] or 0),
        net_nusd=int(row["net_nusd"] or 0),
        local_nusd=int(row["local_nusd"] or 0),
        tokens=int(row["prompt_tokens"] or 0) + int(row["completion_tokens"] or 0),
        runs=int(row["runs"] or 0),
        unpriced_runs=int(row["unpriced_runs"] or 0),
    )


def _projection(
    days: Mapping[date, Amounts], *, first_day: date | None, today: date, month_first: date
) -> Projection:
    month_end = month_first.replace(day=calendar.monthrange(month_first.year, month_first.month)[1])
    month_to_date, rate_sum = Amounts(), Amounts()
    window_start = today - timedelta(days=RATE_DAYS)
    rate_from = max(window_start, first_day) if first_day is not None else None
    rate_days = (today - rate_from).days if rate_from is not None and rate_from < today else 0
    for day, amounts in days.items():
        if month_first <= day <= today:
            month_to_date = month_to_date.plus(amounts)
        if rate_days and rate_from is not None and rate_from <= day < today:
            rate_sum = rate_sum.plus(amounts)
    return Projection(
        month_to_date=month_to_date,
        rate_days=rate_days,
        rate_from=rate_from if rate_days else None,
        rate_sum=rate_sum,
        days_left=(month_end - today).days,
    )


def run_out(state: BudgetState, projection: Projection, *, today: date) -> BudgetRunOut:
    """The day ``state``'s budget is used up at ``projection``'s daily rate, from tomorrow on.

    A budget in both tokens and USD runs out at the earlier of the two. Already used up: today.
    No rate, or a date on or after the reset: None, with the sentence why.
    """
    resets_on = report_day(state.resets_at)

    def result(runs_out_on: date | None, why: str) -> BudgetRunOut:
        return BudgetRunOut(
            window=state.window,
            hard=state.hard,
            left_tokens=state.left_tokens,
            left_nusd=state.left_nusd,
            resets_on=resets_on,
            runs_out_on=runs_out_on,
            why=why,
        )

    # A token budget runs down at the tokens' rate, a USD one at the avoided spend's.
    lefts = [
        (state.left_tokens, projection.rate_sum.tokens),
        (state.left_nusd, projection.rate_sum.avoided_nusd),
    ]
    candidates: list[date] = []
    for left, rate_sum in lefts:
        if left is None:
            continue
        if left <= 0:
            return result(today, f"It is used up; it resets on {resets_on:%-d %b %Y}.")
        if projection.rate_days and rate_sum > 0:
            # ceil(left / (rate_sum / rate_days)) days from today, in integers
            days_needed = -(-left * projection.rate_days // rate_sum)
            candidates.append(today + timedelta(days=days_needed))
    if not candidates:
        return result(None, "No recent use to forecast from: at no use it lasts until it resets.")
    runs_out_on = min(candidates)
    if runs_out_on >= resets_on:
        return result(
            None, f"At the recent rate it lasts until it resets on {resets_on:%-d %b %Y}."
        )
    return result(runs_out_on, f"At the recent rate it runs out on {runs_out_on:%-d %b %Y}.")


def _budget_state(workflow: Workflow, now: datetime | None) -> BudgetState | None:
    return budget_state(workflow=workflow, now=now)


def _with_budget(workflows: Sequence[Workflow]) -> set[int]:
    """The workflows with a limits row (the others have no budget: no per-workflow lookup)."""
    ids = [w.pk for w in workflows]
    return set(Limits.objects.filter(workflow_id__in=ids).values_list("workflow_id", flat=True))


def forecast(
    *,
    today: date | None = None,
    workflow: Workflow | None = None,
    node: str = "",
    now: datetime | None = None,
) -> Forecast:
    """This month's forecast in total and per workflow (just ``workflow``'s when given; one
    node's runs when ``node`` is given: budgets count every node, so they are left out then).

    ``today`` is a report day (default: today in the report time zone); ``now`` the moment the
    budgets are read at (default: now).
    """
    today = today or report_today()
    month_first = today.replace(day=1)
    month_end = month_first.replace(day=calendar.monthrange(today.year, today.month)[1])
    workflows = [workflow] if workflow is not None else list(Workflow.objects.order_by("name"))
    ids = [w.pk for w in workflows]

    rows = WorkflowDailyRollup.objects.filter(
        day__gte=min(month_first, today - timedelta(days=RATE_DAYS)), day__lte=today
    )
    firsts = WorkflowDailyRollup.objects.filter(day__lte=today)
    if workflow is not None:
        rows, firsts = rows.filter(workflow_id__in=ids), firsts.filter(workflow_id__in=ids)
    if node:
        rows, firsts = rows.filter(node=node), firsts.filter(node=node)
    per_workflow: dict[int, dict[date, Amounts]] = {}
    per_day: dict[date, Amounts] = {}
    grouped = rows.values("workflow_id", "day").annotate(**{f: Sum(f) for f in _SUMS})
    for row in grouped.values("workflow_id", "day", *_SUMS):
        amounts = _amounts(row)
        per_workflow.setdefault(row["workflow_id"], {})[row["day"]] = amounts
        per_day[row["day"]] = per_day.get(row["day"], Amounts()).plus(amounts)
    first_days: dict[int, date] = dict(
        firsts.values("workflow_id").annotate(first=Min("day")).values_list("workflow_id", "first")
    )

    def project(days: Mapping[date, Amounts], first: date | None) -> Projection:
        return _projection(days, first_day=first, today=today, month_first=month_first)

    budgeted = _with_budget(workflows) if not node else set()
    lines = []
    for flow in workflows:
        projection = project(per_workflow.get(flow.pk, {}), first_days.get(flow.pk))
        budget = None
        if flow.pk in budgeted:
            state = _budget_state(flow, now)
            if state is not None:
                budget = run_out(state, projection, today=today)
        lines.append(WorkflowForecast(workflow=flow, projection=projection, budget=budget))
    return Forecast(
        today=today,
        month_start=month_first,
        month_end=month_end,
        total=project(per_day, min(first_days.values(), default=None)),
        workflows=lines,
        node=node,
    )
