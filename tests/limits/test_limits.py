"""Budgets and rate limits in the services: windows in the report time zone, admission (hard and
soft budgets in tokens and USD, requests and tokens per minute), the counting finalizer, the
recount when limits are set mid-window, budget alerts once per crossing, and the refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from opsdash.core.audit import AuditEntry
from opsdash.core.errors import Code
from opsdash.limits.models import UsageCounter
from opsdash.limits.services import (
    BudgetSpec,
    LimitExceeded,
    LimitsRefused,
    admit,
    budget_state,
    set_limits,
    window_bounds,
)
from opsdash.notify.models import Notification
from tests import factories
from tests.limits.conftest import gateway_run

NY = ZoneInfo("America/New_York")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def limit(target, *, budget=None, rpm=None, tpm=None, **kw):  # type: ignore[no-untyped-def]
    owner = {"workflow": target} if hasattr(target, "slug") else {"key": target}
    return set_limits(
        **owner, budget=budget, requests_per_minute=rpm, tokens_per_minute=tpm, user=None, **kw
    )


# ----------------------------------------------------------------------------- windows


def test_days_weeks_and_months_are_the_report_time_zones_even_across_daylight_saving(settings):
    settings.REPORT_TIME_ZONE = "America/New_York"
    # 2026-03-08 is the day New York moves its clocks forward: a 23-hour day.
    noon = at(2026, 3, 8, 17, 0)
    start, end = window_bounds("day", noon)
    assert start == datetime(2026, 3, 8, tzinfo=NY) and end == datetime(2026, 3, 9, tzinfo=NY)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)
    start, end = window_bounds("week", noon)
    assert start == datetime(2026, 3, 2, tzinfo=NY), "weeks start on Monday"
    assert end == datetime(2026, 3, 9, tzinfo=NY)
    start, end = window_bounds("month", noon)
    assert (start, end) == (datetime(2026, 3, 1, tzinfo=NY), datetime(2026, 4, 1, tzinfo=NY))
    # 03:00 UTC on 1 March is still 28 February in New York.
    assert window_bounds("month", at(2026, 3, 1, 3, 0))[0] == datetime(2026, 2, 1, tzinfo=NY)
    assert window_bounds("day", at(2026, 3, 1, 3, 0))[0] == datetime(2026, 2, 28, tzinfo=NY)
    start, end = window_bounds("minute", at(2026, 3, 8, 17, 0, 42))
    assert (start, end) == (at(2026, 3, 8, 17, 0), at(2026, 3, 8, 17, 1))


# ----------------------------------------------------------------------------- budgets


def test_a_hard_token_budget_refuses_once_used_up_and_says_how_much_and_until_when(
    key, ledger_model, settings
):
    settings.REPORT_TIME_ZONE = "Europe/Paris"
    limit(key.workflow, budget=BudgetSpec(window="day", tokens=3000, hard=True))
    gateway_run(key, ledger_model)
    admit(key=key)  # 1,500 of 3,000: still open
    gateway_run(key, ledger_model)

    with pytest.raises(LimitExceeded) as refused:
        admit(key=key)

    assert refused.value.code == Code.INSUFFICIENT_QUOTA and refused.value.retry_after is None
    assert "3,000 of 3,000 tokens" in refused.value.reason
    assert "daily budget" in refused.value.reason and "Europe/Paris" in refused.value.reason
    state = budget_state(workflow=key.workflow)
    assert state is not None and state.left_tokens == 0 and state.percent == 100
    assert state.resets_at == window_bounds("day", datetime.now(UTC))[1]


def test_a_usd_budget_counts_the_avoided_spend_of_each_run(key, ledger_model):
    limit(key, budget=BudgetSpec(window="month", usd="3.00"))
    gateway_run(key, ledger_model)  # avoids exactly $2.00
    admit(key=key)
    state = budget_state(key=key)
    assert state is not None
    assert state.as_json()["used"] == {"tokens": 1500, "usd": "2.000000000"}
    assert state.as_json()["left"] == {"tokens": None, "usd": "1.000000000"}
    gateway_run(key, ledger_model)

    with pytest.raises(LimitExceeded) as refused:
        admit(key=key)

    assert refused.value.code == Code.INSUFFICIENT_QUOTA
    assert (
        "The key “n8n”" in refused.value.reason and "$4.00 of $3.00 avoided" in refused.value.reason
    )


def test_a_soft_budget_lets_calls_through_when_used_up(key, ledger_model):
    limit(key.workflow, budget=BudgetSpec(window="week", tokens=1000, hard=False))
    gateway_run(key, ledger_model)

    admit(key=key)

    state = budget_state(workflow=key.workflow)
    assert state is not None and state.percent == 150 and not state.hard


def test_runs_of_other_workflows_and_other_keys_do_not_count(key, ledger_model):
    limit(key, budget=BudgetSpec(window="day", tokens=1000))
    other_key = factories.workflow("other")
    from opsdash.gateway.services import create_api_key

    sibling = create_api_key(workflow=key.workflow, name="sibling", user=None).key
    gateway_run(sibling, ledger_model)
    factories.finished_run(other_key, ledger_model)
    factories.finished_run(key.workflow, ledger_model)  # the workflow's, not through this key

    admit(key=key)
    state = budget_state(key=key)
    assert state is not None and state.used_tokens == 0


def test_a_budget_set_mid_window_counts_the_runs_already_in_it_and_not_older_ones(
    key, ledger_model
):
    factories.finished_run(key.workflow, ledger_model, prompt_tokens=700, completion_tokens=300)
    yesterday = datetime.now(UTC) - timedelta(days=1, hours=1)
    factories.finished_run(key.workflow, ledger_model, started_at=yesterday)

    limit(key.workflow, budget=BudgetSpec(window="day", tokens=5000))

    state = budget_state(workflow=key.workflow)
    assert state is not None and state.used_tokens == 1000
    assert state.used_nusd == 1_300_000_000  # 700 in at $1,000 + 300 out at $2,000 per Mtok
    factories.finished_run(key.workflow, ledger_model)  # then the finalizer adds each run
    state = budget_state(workflow=key.workflow)
    assert state is not None and state.used_tokens == 2500


def test_no_budget_is_no_state(key):
    assert budget_state(workflow=key.workflow) is None
    limit(key.workflow, rpm=10)
    assert budget_state(workflow=key.workflow) is None


# ----------------------------------------------------------------------------- rates


def test_requests_per_minute_refuse_with_retry_after_to_the_end_of_the_real_minute(key):
    limit(key, rpm=3)
    now = at(2030, 1, 1, 12, 0, 45)
    remaining = [admit(key=key, now=now).remaining_requests for _ in range(3)]
    assert remaining == [2, 1, 0]

    with pytest.raises(LimitExceeded) as refused:
        admit(key=key, now=now + timedelta(seconds=10))

    assert refused.value.code == Code.RATE_LIMITED and refused.value.limit == "requests"
    assert refused.value.retry_after == 5  # 12:00:55 → 12:01:00
    assert "3 requests per minute" in refused.value.reason
    minute = UsageCounter.objects.get(window="minute", start=at(2030, 1, 1, 12, 0))
    assert minute.requests == 3, "a refusal counts nothing"
    assert admit(key=key, now=at(2030, 1, 1, 12, 1, 0)).headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "60s",
    }


def test_a_workflow_limit_refusing_takes_back_the_keys_increment(key):
    limit(key, rpm=5)
    limit(key.workflow, rpm=2)
    now = at(2030, 1, 1, 8, 30, 0)
    admit(key=key, now=now)
    admit(key=key, now=now)

    with pytest.raises(LimitExceeded) as refused:
        admit(key=key, now=now)

    assert "The workflow “Invoices”" in refused.value.reason
    counts = dict(UsageCounter.objects.filter(window="minute").values_list("scope", "requests"))
    assert counts == {f"key:{key.pk}": 2, f"workflow:{key.workflow_id}": 2}


def test_old_minute_counters_are_pruned_when_a_new_minute_begins(key):
    limit(key, rpm=100)
    admit(key=key, now=at(2030, 1, 1, 8, 0, 0))
    admit(key=key, now=at(2030, 1, 1, 8, 30, 0))
    admit(key=key, now=at(2030, 1, 1, 9, 29, 0))
    starts = sorted(UsageCounter.objects.filter(window="minute").values_list("start", flat=True))
    assert starts == [at(2030, 1, 1, 8, 30), at(2030, 1, 1, 9, 29)], "kept: the last hour"


def test_tokens_per_minute_count_the_tokens_of_this_minutes_finished_runs(key, ledger_model):
    limit(key, tpm=1500)
    admit(key=key)
    gateway_run(key, ledger_model)  # 1,500 tokens finished now

    with pytest.raises(LimitExceeded) as refused:
        admit(key=key)

    assert refused.value.code == Code.RATE_LIMITED and refused.value.limit == "tokens"
    assert 1 <= (refused.value.retry_after or 0) <= 60
    assert "1,500 tokens per minute" in refused.value.reason


# ----------------------------------------------------------------------------- alerts


def test_each_alert_percent_is_notified_once_when_crossed(key, ledger_model):
    limits = limit(key.workflow, budget=BudgetSpec(window="day", tokens=4000))
    gateway_run(key, ledger_model)  # 1,500 = 37.5 %: nothing
    assert not Notification.objects.filter(kind="budget").exists()
    gateway_run(key, ledger_model)  # 3,000 = 75 %: crosses 50
    gateway_run(key, ledger_model)  # 4,500 = 112.5 %: crosses 80 and 100
    gateway_run(key, ledger_model)  # still over: nothing new

    sent = list(Notification.objects.filter(kind="budget").order_by("id"))
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert [n.key for n in sent] == [f"budget:{limits.pk}:{day}:{p}" for p in (50, 80, 100)]
    assert "Budget 100 % used" in sent[2].subject and "“Invoices”" in sent[2].subject
    assert "refused until it resets" in sent[2].message
    assert sent[0].link == f"/savings/workflows/{key.workflow.slug}/"


def test_alert_percents_are_configurable(key, ledger_model):
    limit(key, budget=BudgetSpec(window="day", tokens=3000, hard=False), alert_percents=[90])
    gateway_run(key, ledger_model)
    gateway_run(key, ledger_model)
    sent = list(Notification.objects.filter(kind="budget"))
    assert len(sent) == 1 and sent[0].key.endswith(":90")
    assert "has used 90 % of its daily budget: 3,000 of 3,000 tokens" in sent[0].message


# ----------------------------------------------------------------------------- set_limits


def test_setting_limits_is_audited_with_before_and_after(key, admin):
    limit(key.workflow, rpm=10)
    set_limits(
        workflow=key.workflow,
        budget=BudgetSpec(window="month", usd="25.5", tokens=None, hard=False),
        requests_per_minute=None,
        tokens_per_minute=None,
        user=admin,
    )
    entry = AuditEntry.objects.filter(action="limits.update").order_by("-id").first()
    assert entry is not None and entry.actor == admin and entry.target_type == "workflow"
    assert entry.detail["before"]["requests_per_minute"] == 10
    assert entry.detail["after"]["requests_per_minute"] is None
    assert entry.detail["after"]["budget_usd"] == "25.500000000"


@pytest.mark.parametrize(
    ("budget", "rpm", "param", "words"),
    [
        (BudgetSpec(window="year", tokens=5), None, "budget.window", "day, week or month"),
        (BudgetSpec(window="day"), None, "budget", "in tokens, in USD, or both"),
        (BudgetSpec(window="day", tokens=0), None, "budget.tokens", "above 0"),
        (BudgetSpec(window="day", usd="lots"), None, "budget.usd", "must be a number"),
        (BudgetSpec(window="day", usd="0"), None, "budget.usd", "above $0"),
        (BudgetSpec(window="day", usd="0.0000000001"), None, "budget.usd", "9 decimal places"),
        (None, -1, "requests_per_minute", "above 0"),
    ],
)
def test_limits_that_cannot_work_are_refused_with_a_sentence_naming_the_field(
    key, budget, rpm, param, words
):
    with pytest.raises(LimitsRefused) as refused:
        limit(key.workflow, budget=budget, rpm=rpm)
    assert refused.value.param == param and words in refused.value.reason
