"""Apps extend each other through typed registrations made in ``AppConfig.ready()``."""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from opsdash.catalog import hooks
from opsdash.limits import services as limits_services
from opsdash.playground.suites import run_suites_after_install
from opsdash.runs import finalizers
from opsdash.runs.models import Run, RunStatus
from opsdash.savings import services as savings_services
from opsdash.savings.metrics import SavingsCollector
from opsdash.savings.models import RunCost
from opsdash.savings.reports import aggregate
from opsdash.telemetry import collectors
from tests.fixtures.personas import client_for
from tests.savings.factories import finished_run, local_model, workflow

pytestmark = pytest.mark.django_db


def broken_costing(*_args: object, **_kwargs: object) -> RunCost:
    raise ZeroDivisionError("price book row with a zero divisor")


def test_a_pricing_bug_leaves_the_run_ok_with_a_failed_cost_and_its_reason(
    monkeypatch, operator
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(savings_services, "compute_cost", broken_costing)
    flow = workflow("support-bot", "openai", "gpt-4o-mini")

    run = finished_run(flow, local_model(), prompt_tokens=10, completion_tokens=5)

    Run.objects.filter(pk=run.pk).update(user=operator)  # the operator's own run, for its page
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.OK and run.finished_at is not None
    cost = RunCost.objects.get(run=run)
    assert not cost.priced and cost.avoided_nusd == 0
    assert "ZeroDivisionError" in cost.error and "zero divisor" in cost.error
    totals = aggregate(start=date.min, end=date.max)[()]
    assert (totals.runs, totals.unpriced_runs) == (1, 1)
    page = client_for(operator).get(reverse("playground:run", args=[run.pk]))
    assert "costing failed" in page.content.decode()
    assert "zero divisor" in page.content.decode()


def test_a_run_priced_again_after_a_failure_loses_the_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("support-bot", "openai", "gpt-4o-mini")
    with monkeypatch.context() as patch:
        patch.setattr(savings_services, "compute_cost", broken_costing)
        run = finished_run(flow, local_model())

    cost = savings_services.price_run(run=Run.objects.get(pk=run.pk))

    assert cost is not None and cost.priced and cost.error == ""
    assert RunCost.objects.get(run=run).error == ""
    totals = aggregate(start=date.min, end=date.max)[()]
    assert (totals.runs, totals.unpriced_runs) == (1, 0)


def test_a_finalizer_can_be_swapped_in_a_test_without_clearing_a_cache() -> None:
    seen: list[int] = []

    def remember(*, run: Run) -> None:
        seen.append(run.pk)

    flow = workflow("drafts")
    with finalizers.finalizers.override(finalizers.Finalizer(remember)):
        run = finished_run(flow, local_model())
    after = finished_run(flow, local_model("other"))

    assert seen == [run.pk]
    assert not RunCost.objects.filter(run=run).exists()  # savings' finalizer was swapped out
    assert RunCost.objects.filter(run=after).exists()  # and is back after the block


def test_a_failing_finalizer_without_a_recorder_still_lets_the_run_finish() -> None:
    def explode(*, run: Run) -> None:
        Run.objects.filter(pk=run.pk).update(output="written by the broken finalizer")
        raise RuntimeError("broken")

    with finalizers.finalizers.override(finalizers.Finalizer(explode)):
        run = finished_run(workflow("drafts"), local_model())

    run.refresh_from_db()
    assert run.status == RunStatus.OK and run.output == "ok"  # its writes were rolled back


def test_each_app_registers_its_extensions_in_ready() -> None:
    # Savings prices the run before limits counts its avoided spend (INSTALLED_APPS order).
    assert [f.finalize for f in finalizers.finalizers.entries()] == [
        savings_services.price_run,
        limits_services.count_run,
    ]
    assert finalizers.finalizers.entries()[0].on_failure == (
        savings_services.record_pricing_failure
    )
    assert hooks.after_install.entries() == (run_suites_after_install,)
    assert collectors.collectors.entries() == (SavingsCollector,)


def test_settings_hold_no_dotted_hook_lists(settings) -> None:  # type: ignore[no-untyped-def]
    for name in ("RUN_FINALIZE_HOOKS", "METRICS_EXTRA_COLLECTORS", "CATALOG_AFTER_INSTALL_HOOKS"):
        assert not hasattr(settings, name)
