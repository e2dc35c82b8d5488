"""The month-end forecast: month to date, the 7-day rate, the projection and budget run-out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.test import Client

from opsdash.limits.services import BudgetSpec, set_limits
from opsdash.runs.models import Workflow
from opsdash.savings.forecast import Forecast, WorkflowForecast, forecast
from opsdash.savings.models import WorkflowDailyRollup
from opsdash.savings.money import NANO_PER_USD
from tests.factories import finished_run, local_model, workflow
from tests.savings.factories import price

pytestmark = pytest.mark.django_db
USD = NANO_PER_USD


def rollup(
    flow: Workflow,
    day: date,
    *,
    avoided: int,
    local: int = 0,
    tokens: int = 0,
    unpriced: bool = False,
) -> None:
    """One hand-made per-workflow rollup row (money nano-USD; tokens split 2:1 in and out)."""
    WorkflowDailyRollup.objects.create(
        day=day,
        workflow=flow,
        runs=1,
        ok_runs=1,
        unpriced_runs=int(unpriced),
        avoided_nusd=avoided,
        local_nusd=local,
        net_nusd=avoided - local,
        prompt_tokens=tokens * 2 // 3,
        completion_tokens=tokens - tokens * 2 // 3,
    )


def _line(data: dict, slug: str) -> dict:  # type: ignore[type-arg]
    return next(line for line in data["workflows"] if line["slug"] == slug)


def _flow(result: Forecast, slug: str) -> WorkflowForecast:
    return next(line for line in result.workflows if line.workflow.slug == slug)


def test_mid_month_it_projects_the_last_seven_days_rate_over_the_days_left() -> None:
    flow = workflow("support")
    for day in range(1, 20):  # 1–19 March: $1 a day, 10 cents of energy, 900 tokens
        rollup(flow, date(2025, 3, day), avoided=USD, local=USD // 10, tokens=900)
    rollup(flow, date(2025, 3, 20), avoided=USD // 2, tokens=300)  # today so far
    rollup(flow, date(2025, 3, 21), avoided=50 * USD)  # after "today": not counted

    result = forecast(today=date(2025, 3, 20))
    total = result.total

    assert total.month_to_date.avoided_nusd == 19 * USD + USD // 2
    assert total.month_to_date.tokens == 19 * 900 + 300
    assert total.rate_days == 7 and total.rate_from == date(2025, 3, 13)
    assert total.daily_rate is not None and total.daily_rate.avoided_nusd == USD
    assert result.days_left == 11
    projected = total.projected_month_end
    assert projected is not None
    assert projected.avoided_nusd == (19.5 + 11) * USD
    assert projected.net_nusd == (19.5 + 11) * USD - 30 * USD // 10
    assert projected.tokens == 19 * 900 + 300 + 11 * 900
    data = result.as_json()
    assert data["month"] == "2025-03"
    assert data["projected_month_end"]["avoided_usd"] == "30.500000000"
    assert data["daily_rate"]["net_usd"] == "0.900000000"
    assert "last 7 complete days before today" in data["method"]
    line = _line(data, "support")
    assert line["projected_month_end"] == data["projected_month_end"]


def test_on_the_first_of_the_month_the_rate_comes_from_last_months_days() -> None:
    flow = workflow("support")
    for day in range(20, 29):  # 20–28 February: $2 a day
        rollup(flow, date(2025, 2, day), avoided=2 * USD)

    total = forecast(today=date(2025, 3, 1)).total

    assert total.month_to_date.avoided_nusd == 0  # February is not this month
    assert total.rate_from == date(2025, 2, 22) and total.rate_days == 7
    assert total.projected_month_end is not None
    assert total.projected_month_end.avoided_nusd == 30 * 2 * USD


def test_with_fewer_than_seven_days_of_history_it_averages_the_days_there_are() -> None:
    flow, other = workflow("support"), workflow("old")
    for offset, dollars in enumerate((1, 2, 3)):  # 17, 18, 19 March
        rollup(flow, date(2025, 3, 17 + offset), avoided=dollars * USD)
    rollup(other, date(2025, 1, 5), avoided=USD)  # long history, nothing recent

    result = forecast(today=date(2025, 3, 20))
    line = {w.workflow.slug: w for w in result.workflows}

    new = line["support"].projection
    assert new.rate_days == 3 and new.rate_from == date(2025, 3, 17)
    assert new.daily_rate is not None and new.daily_rate.avoided_nusd == 2 * USD
    assert new.projected_month_end is not None
    assert new.projected_month_end.avoided_nusd == 6 * USD + 11 * 2 * USD
    # In total the history is older than a week: the mean is over 7 days, zeros included.
    assert result.total.rate_days == 7
    assert result.total.daily_rate is not None
    assert result.total.daily_rate.avoided_nusd == 857_142_857  # $6 / 7, to the nano
    assert line["old"].projection.daily_rate is not None
    assert line["old"].projection.daily_rate.avoided_nusd == 0


def test_the_projection_rounds_once_not_per_day() -> None:
    flow = workflow("support")
    for day in (17, 18, 19):
        rollup(flow, date(2025, 3, day), avoided=10 // 3 + (day == 17))  # 4 + 3 + 3 nano
    projection = forecast(today=date(2025, 3, 20)).total
    assert projection.projected_month_end is not None
    # 10 nano over 3 days × 11 days = 36.67 → 37, not round(3.33) × 11 = 33.
    assert projection.projected_month_end.avoided_nusd == 10 + 37


def test_without_history_before_today_there_is_no_rate_and_no_projection() -> None:
    flow = workflow("support")
    rollup(flow, date(2025, 3, 20), avoided=USD)

    result = forecast(today=date(2025, 3, 20))
    assert result.total.month_to_date.avoided_nusd == USD
    assert result.total.daily_rate is None and result.total.projected_month_end is None
    data = result.as_json()
    assert data["daily_rate"] is None and data["projected_month_end"] is None
    assert _line(data, "support")["budget"] is None

    empty = forecast(today=date(2025, 3, 20), workflow=workflow("unused")).as_json()
    assert empty["month_to_date"]["avoided_usd"] == "0.000000000"
    assert empty["rate_days"] == 0 and empty["projected_month_end"] is None


def test_a_workflow_whose_runs_had_no_price_forecasts_unpriced_not_zero() -> None:
    flow = workflow("notes")
    for day in (18, 19, 20):
        rollup(flow, date(2025, 3, day), avoided=0, local=USD // 100, unpriced=True)

    line = _line(forecast(today=date(2025, 3, 20)).as_json(), "notes")

    assert line["pricing"] == "unpriced"
    assert line["month_to_date"]["avoided_usd"] is None and line["month_to_date"]["net_usd"] is None
    assert line["projected_month_end"]["local_cost_usd"] == "0.140000000"  # 3 + 11 days × 1 cent
    assert _line(forecast(today=date(2025, 3, 20)).as_json(), "playground")["pricing"] == "no_runs"


# ----------------------------------------------------------------------------- budgets

TODAY = date(2025, 3, 20)
NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)


def _busy_week(flow: Workflow) -> None:
    """Two runs a day on 13–20 March (1500 tokens and $0.002 avoided each), counted by the real
    finalizers into the rollups and the budget's counters."""
    model = local_model()
    for day in range(13, 21):
        for hour in (9, 10):
            finished_run(flow, model, started_at=datetime(2025, 3, day, hour, tzinfo=UTC))


@pytest.fixture
def priced_flow() -> Workflow:
    price("openai", "gpt-4o-mini", "1.00", "2.00", start=datetime(2025, 1, 1, tzinfo=UTC))
    return workflow("support", "openai", "gpt-4o-mini")


def _budget(flow: Workflow, **spec: object) -> None:
    set_limits(
        workflow=flow,
        budget=BudgetSpec(**spec),  # type: ignore[arg-type]
        requests_per_minute=None,
        tokens_per_minute=None,
        user=None,
    )


def test_a_token_budget_runs_out_at_the_daily_token_rate(priced_flow: Workflow) -> None:
    _budget(priced_flow, window="month", tokens=40_000)
    _busy_week(priced_flow)  # 24 000 tokens used, 3000 a day

    budget = _flow(forecast(today=TODAY, now=NOW), "support").budget

    assert budget is not None and budget.left_tokens == 16_000
    assert budget.runs_out_on == date(2025, 3, 26)  # ceil(16 000 / 3000) = 6 days
    data = budget.as_json()
    assert data["runs_out_on"] == "2025-03-26" and data["left"] == {"tokens": 16_000}
    assert data["window"] == "month" and data["resets_on"] == "2025-04-01"


def test_a_usd_budget_runs_out_at_the_avoided_spend_rate(priced_flow: Workflow) -> None:
    _budget(priced_flow, window="month", usd="0.05")
    _busy_week(priced_flow)  # $0.032 used, $0.004 a day

    budget = forecast(today=TODAY, now=NOW, workflow=priced_flow).workflows[0].budget

    assert budget is not None and budget.left_nusd == 18 * USD // 1000
    assert budget.runs_out_on == date(2025, 3, 25)  # ceil(0.018 / 0.004) = 5 days
    assert budget.as_json()["left"] == {"usd": "0.018000000"}


def test_a_budget_that_outlasts_its_window_has_no_run_out_date(priced_flow: Workflow) -> None:
    _budget(priced_flow, window="month", tokens=100_000, usd="10")
    _busy_week(priced_flow)

    budget = _flow(forecast(today=TODAY, now=NOW), "support").budget

    assert budget is not None and budget.runs_out_on is None
    assert "lasts until it resets on 1 Apr 2025" in budget.why


def test_a_used_up_budget_ran_out_today(priced_flow: Workflow) -> None:
    _budget(priced_flow, window="week", tokens=3000)
    _busy_week(priced_flow)  # 17–20 March in this week: 12 000 tokens

    budget = _flow(forecast(today=TODAY, now=NOW), "support").budget

    assert budget is not None and budget.runs_out_on == TODAY
    assert budget.resets_on == date(2025, 3, 24) and "used up" in budget.why


def test_the_summary_api_carries_the_forecast(priced_flow: Workflow, manager) -> None:  # type: ignore[no-untyped-def]
    _budget(priced_flow, window="month", tokens=10**9)
    model = local_model()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    finished_run(priced_flow, model, started_at=yesterday)
    client = Client()
    client.force_login(manager)

    response = client.get("/api/savings/summary?range=7d")

    assert response.status_code == 200
    data = response.json()["forecast"]
    assert set(data) >= {"month", "method", "month_to_date", "daily_rate", "projected_month_end"}
    assert _line(data, "support")["budget"]["window"] == "month"
    assert _line(data, "support")["budget"]["runs_out_on"] is None
    assert _line(data, "playground")["budget"] is None
    assert data["daily_rate"]["tokens"] == 1500  # one day of history: that day's 1500 tokens
    page = client.get("/savings/")
    assert page.status_code == 200
    assert b'data-testid="forecast"' in page.content
    assert data["method"].encode() in page.content.replace(b"&#x27;", b"'")
    detail = client.get("/savings/workflows/support/").content.decode()
    assert 'data-testid="budget-run-out"' in detail and "lasts until it resets" in detail
