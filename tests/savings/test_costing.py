"""Per-run costing, frozen at finalize: the price row in effect when the run started."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from opsdash.runs.models import RunStatus
from opsdash.savings.models import CostingChange, EnergySource, PriceSource, RunCost
from opsdash.savings.services import CostingRefused, set_workflow_costing
from tests.savings.factories import finished_run, local_model, price, started_run, workflow

pytestmark = pytest.mark.django_db


def test_a_finalized_run_gets_its_frozen_cost_in_nano_usd(seeded_prices) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("support-bot", "openai", "gpt-4o-mini")
    run = finished_run(flow, local_model(), prompt_tokens=1000, completion_tokens=500)

    cost = RunCost.objects.select_related("price").get(run=run)
    assert cost.priced and cost.price is not None
    assert (cost.price.model, cost.price.source) == ("gpt-4o-mini", PriceSource.PACKAGE)
    assert cost.avoided_nusd == 1000 * 150 + 500 * 600  # $0.15 / $0.60 per Mtok
    assert cost.energy_mj == 20_000  # 2.0 CPU-seconds × 10 W
    assert cost.energy_source == EnergySource.ESTIMATED
    assert "2.000 CPU-seconds × 10 W" in cost.energy_basis
    assert cost.local_nusd == 944  # 20 J at $0.17/kWh = $0.000000944…
    assert cost.net_nusd == cost.avoided_nusd - cost.local_nusd
    assert (cost.baseline_provider, cost.baseline_model) == ("openai", "gpt-4o-mini")
    assert cost.token_method == "local_tokenizer"
    assert all(type(getattr(cost, f)) is int for f in ("avoided_nusd", "local_nusd", "net_nusd"))


def test_a_price_change_only_affects_runs_started_after_it(admin) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    flow = workflow("drafts", "acme", "chat-1")
    model = local_model()
    price("acme", "chat-1", "1.00", "2.00", start=now - timedelta(days=30))
    old = finished_run(flow, model, started_at=now - timedelta(days=10))
    started_before = started_run(flow, model, started_at=now - timedelta(seconds=5))

    new_row = price("acme", "chat-1", "3.00", "4.00", user=admin)  # an admin changes it now
    after = finished_run(flow, model)
    from opsdash.runs.services import finish_run

    finish_run(  # started before the change, finalized after it
        run_id=started_before.pk,
        status=RunStatus.OK,
        usage={"prompt_tokens": 1000, "completion_tokens": 500, "cpu_seconds": 2.0},
    )

    costs = {c.run_id: c for c in RunCost.objects.all()}
    assert costs[old.pk].avoided_nusd == 1000 * 1000 + 500 * 2000
    assert costs[started_before.pk].avoided_nusd == 1000 * 1000 + 500 * 2000
    assert costs[after.pk].avoided_nusd == 1000 * 3000 + 500 * 4000
    assert costs[after.pk].price_id == new_row.pk
    assert costs[old.pk].price_id != new_row.pk and costs[old.pk].revision == 1


def test_a_workflow_without_a_price_is_unpriced_not_free() -> None:
    model = local_model()
    no_baseline = finished_run(workflow("notes"), model)
    unknown = finished_run(workflow("legal", "acme", "never-priced"), model)
    for run in (no_baseline, unknown):
        cost = RunCost.objects.get(run=run)
        assert not cost.priced and cost.price is None
        assert (cost.avoided_nusd, cost.net_nusd) == (0, 0)
        assert cost.local_nusd > 0  # the energy was still spent


def test_a_failed_run_avoids_nothing_but_still_used_energy() -> None:
    flow = workflow("drafts", "acme", "chat-1")
    price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=1))
    run = finished_run(flow, local_model(), status=RunStatus.ERROR, cpu_seconds=0.5)
    cost = RunCost.objects.get(run=run)
    assert cost.priced and cost.avoided_nusd == 0
    assert cost.energy_mj == 5_000 and cost.net_nusd == -cost.local_nusd


def test_without_cpu_time_the_estimate_uses_the_duration_on_every_cpu() -> None:
    flow = workflow("notes")
    run = finished_run(flow, local_model(), cpu_seconds=None, total_ms=1000.0)
    cost = RunCost.objects.get(run=run)
    assert cost.energy_mj == 10_000 * (os.cpu_count() or 1)
    assert "upper bound" in cost.energy_basis

    interrupted = finished_run(
        flow, local_model("other"), status=RunStatus.INTERRUPTED, cpu_seconds=None, total_ms=None
    )
    cost = RunCost.objects.get(run=interrupted)
    assert cost.energy_mj == 0 and "no runner timing" in cost.energy_basis


def test_changing_the_baseline_applies_from_that_moment_on(admin) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    price("acme", "cheap", "1", "1", start=now - timedelta(days=30))
    price("acme", "dear", "10", "10", start=now - timedelta(days=30))
    flow = workflow("drafts", "acme", "cheap")
    model = local_model()
    before = finished_run(flow, model, started_at=now - timedelta(days=2))

    set_workflow_costing(
        workflow=flow,
        baseline_provider="acme",
        baseline_model="dear",
        electricity_usd_per_kwh="0.36",
        user=admin,
    )
    after = finished_run(flow, model)
    late = finished_run(flow, model, started_at=now - timedelta(days=1))  # started before

    costs = {c.run_id: c for c in RunCost.objects.all()}
    assert costs[before.pk].avoided_nusd == 1500 * 1000
    assert costs[late.pk].baseline_model == "cheap"
    assert costs[late.pk].electricity_nusd_per_kwh == 170_000_000
    assert costs[after.pk].avoided_nusd == 1500 * 10_000
    assert costs[after.pk].electricity_nusd_per_kwh == 360_000_000
    assert costs[after.pk].local_nusd == 2_000  # 20 J at $0.36/kWh
    history = list(CostingChange.objects.filter(workflow=flow).order_by("effective_from"))
    assert [h.baseline_model for h in history] == ["cheap", "dear"]
    flow.refresh_from_db()
    assert flow.baseline_model == "dear"


@pytest.mark.parametrize(
    ("provider", "model", "electricity", "message"),
    [
        ("openai", "", "", "both the provider and the model"),
        ("open ai", "gpt 4o", "", "Name the baseline"),
        ("openai", "gpt-4o", "-1", "cannot be negative"),
        ("openai", "gpt-4o", "250", "not believable"),
    ],
)
def test_a_bad_workflow_costing_is_refused(provider, model, electricity, message) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("drafts")
    with pytest.raises(CostingRefused, match=message):
        set_workflow_costing(
            workflow=flow,
            baseline_provider=provider,
            baseline_model=model,
            electricity_usd_per_kwh=electricity,
            user=None,
        )
    assert not CostingChange.objects.exists()
