"""Daily rollups are updated with each run and equal a rebuild from the runs; re-pricing is
explicit and audited."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.utils import timezone

from opsdash.core.models import AuditEntry
from opsdash.runs.models import RunStatus
from opsdash.savings.days import report_day
from opsdash.savings.models import DailyRollup, RunCost, WorkflowDailyRollup
from opsdash.savings.recompute import recompute_savings
from opsdash.savings.rollups import rebuild_rollups
from opsdash.savings.services import CostingRefused
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db

FIELDS = (
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
)


def _rollups() -> dict[tuple[object, ...], tuple[int, ...]]:
    """Both rollup tables, keyed (day, workflow, model) and (day, workflow)."""
    rows = {
        (r.day, r.workflow_id, r.model_id): tuple(getattr(r, f) for f in FIELDS)
        for r in DailyRollup.objects.all()
    }
    rows.update(
        {
            (r.day, r.workflow_id): tuple(getattr(r, f) for f in FIELDS)
            for r in WorkflowDailyRollup.objects.all()
        }
    )
    return rows


def _mixed_runs() -> None:
    """Runs over several days, two workflows (one unpriced), two models, all statuses."""
    now = timezone.now()
    price("acme", "chat-1", "1.25", "3.75", start=now - timedelta(days=40))
    priced, unpriced = workflow("drafts", "acme", "chat-1"), workflow("notes")
    small, big = local_model("small"), local_model("big")
    statuses = [RunStatus.OK, RunStatus.OK, RunStatus.CANCELLED, RunStatus.ERROR]
    for i in range(24):
        finished_run(
            priced if i % 3 else unpriced,
            small if i % 2 else big,
            started_at=now - timedelta(days=i % 6, hours=i),
            prompt_tokens=100 + 37 * i,
            completion_tokens=11 * i,
            status=statuses[i % 4],
            cpu_seconds=0.123 * i if i % 5 else None,
        )


def test_incremental_rollups_equal_rebuilt_ones(settings) -> None:  # type: ignore[no-untyped-def]
    settings.REPORT_TIME_ZONE = "America/New_York"  # day boundaries are not UTC's
    _mixed_runs()
    incremental = _rollups()
    per_model = {k: v for k, v in incremental.items() if len(k) == 3}
    per_workflow = {k: v for k, v in incremental.items() if len(k) == 2}
    assert sum(v[0] for v in per_model.values()) == 24
    # The per-workflow table is the per-model one summed over models.
    summed: dict[tuple[object, ...], list[int]] = {}
    for (day, workflow_id, _), values in per_model.items():
        acc = summed.setdefault((day, workflow_id), [0] * len(FIELDS))
        for i, value in enumerate(values):
            acc[i] += value
    assert {k: tuple(v) for k, v in summed.items()} == per_workflow

    rebuild_rollups()
    assert _rollups() == incremental
    days = [k[0] for k in incremental]
    rebuild_rollups(start=min(days), end=max(days))  # type: ignore[type-var]
    assert _rollups() == incremental


def test_a_run_lands_on_its_start_day_in_the_report_time_zone(settings) -> None:  # type: ignore[no-untyped-def]
    settings.REPORT_TIME_ZONE = "Asia/Tokyo"
    late_evening_utc = datetime(2025, 3, 1, 20, 30, tzinfo=ZoneInfo("UTC"))
    run = finished_run(workflow("notes"), local_model(), started_at=late_evening_utc)
    assert report_day(run.started_at).isoformat() == "2025-03-02"
    assert DailyRollup.objects.get().day.isoformat() == "2025-03-02"


def test_recompute_writes_an_audit_entry_and_moves_nothing_when_nothing_changed(admin) -> None:  # type: ignore[no-untyped-def]
    _mixed_runs()
    unchanged = _rollups()
    costs = {c.run_id: (c.avoided_nusd, c.local_nusd, c.revision) for c in RunCost.objects.all()}

    today = report_day(timezone.now())
    result = recompute_savings(start=today - timedelta(days=10), end=today, user=admin)

    assert (result.runs, result.changed, result.newly_costed) == (24, 0, 0)
    assert result.avoided_before == result.avoided_after
    assert _rollups() == unchanged
    assert {
        c.run_id: (c.avoided_nusd, c.local_nusd, c.revision) for c in RunCost.objects.all()
    } == costs
    entry = AuditEntry.objects.get(action="savings.recompute")
    assert entry.actor == admin
    assert "24 run(s), 0 re-priced" in entry.detail and "all workflows" in entry.detail


def test_recompute_applies_a_changed_price_only_when_asked() -> None:
    now = timezone.now()
    flow = workflow("drafts", "acme", "chat-1")
    run = finished_run(flow, local_model(), started_at=now - timedelta(days=2))
    assert not RunCost.objects.get(run=run).priced  # no price existed when it ran

    price("acme", "chat-1", "1", "1", start=now - timedelta(days=5))
    assert not RunCost.objects.get(run=run).priced  # never re-priced silently

    day = report_day(run.started_at)
    dry = recompute_savings(start=day, end=day, dry_run=True)
    assert dry.changed == 1 and not RunCost.objects.get(run=run).priced
    assert not AuditEntry.objects.filter(action="savings.recompute").exists()

    call_command("recompute_savings", "--from", day.isoformat(), "--to", day.isoformat())
    cost = RunCost.objects.get(run=run)
    assert cost.priced and cost.avoided_nusd == 1500 * 1000 and cost.revision == 2
    assert DailyRollup.objects.get().avoided_nusd == cost.avoided_nusd
    assert AuditEntry.objects.filter(action="savings.recompute").count() == 1


def test_recompute_refuses_a_reversed_range() -> None:
    today = report_day(timezone.now())
    with pytest.raises(CostingRefused, match="reversed"):
        recompute_savings(start=today, end=today - timedelta(days=1))
