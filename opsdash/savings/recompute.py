"""``recompute_savings``: the one explicit, audited way to change costs already frozen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.contrib.auth.models import User
from django.db import transaction

from opsdash.runs.models import Run, RunStatus, Workflow
from opsdash.savings import catalogue
from opsdash.savings.days import day_start
from opsdash.savings.energy import estimated_energy
from opsdash.savings.models import EnergySource, RunCost, SavingsAction
from opsdash.savings.money import nano_to_str
from opsdash.savings.pricebook import audit
from opsdash.savings.rollups import rebuild_rollups
from opsdash.savings.services import CostingRefused, EnergyReading, compute_cost, recorded_energy


@dataclass(frozen=True)
class RecomputeResult:
    runs: int
    changed: int
    newly_costed: int
    avoided_before: int
    avoided_after: int
    local_before: int
    local_after: int
    dry_run: bool


def recompute_savings(
    *,
    start: date,
    end: date,
    workflow: Workflow | None = None,
    user: User | None = None,
    dry_run: bool = False,
) -> RecomputeResult:
    """Re-price the finalized runs that started on ``start``…``end`` (report days, inclusive)
    with the price book and costing history as they are now, then rebuild those days' rollups.

    Energy is not re-measured (it cannot be, afterwards): each run keeps its recorded energy;
    a run that had no cost yet gets an estimate. Writes an audit entry with the before and
    after totals; with ``dry_run`` nothing is written and the result says what would change.
    """
    if end < start:
        raise CostingRefused(f"The date range is reversed: {start} is after {end}.")
    if (end - start).days > 3660:
        raise CostingRefused("Recompute at most ten years at a time.")
    runs = (
        Run.objects.exclude(status=RunStatus.RUNNING)
        .filter(
            started_at__gte=day_start(start),
            started_at__lt=day_start(end + timedelta(days=1)),
        )
        .select_related("workflow")
        .order_by("pk")
    )
    if workflow is not None:
        runs = runs.filter(workflow=workflow)
    total = changed = newly = 0
    before = [0, 0]
    after = [0, 0]
    with transaction.atomic():
        ids = list(runs.values_list("pk", flat=True))
        for chunk_start in range(0, len(ids), 2000):
            chunk = ids[chunk_start : chunk_start + 2000]
            existing = {c.run_id: c for c in RunCost.objects.filter(run_id__in=chunk)}
            updates, creates = [], []
            for run in runs.filter(pk__in=chunk):
                total += 1
                old = existing.get(run.pk)
                if old is None:
                    cost = compute_cost(run, energy=run_energy_estimate(run))
                    creates.append(cost)
                    newly += 1
                else:
                    before[0] += old.avoided_nusd
                    before[1] += old.local_nusd
                    cost = compute_cost(run, energy=recorded_energy(old))
                    if _differs(old, cost):
                        cost.revision = old.revision + 1
                        updates.append(cost)
                        changed += 1
                    else:
                        cost = old
                after[0] += cost.avoided_nusd
                after[1] += cost.local_nusd
            RunCost.objects.bulk_create(creates)
            RunCost.objects.bulk_update(
                updates,
                [
                    "priced",
                    "price",
                    "baseline_provider",
                    "baseline_model",
                    "electricity_nusd_per_kwh",
                    "avoided_nusd",
                    "local_nusd",
                    "net_nusd",
                    "priced_at",
                    "revision",
                    "batch_rate",
                ],
            )
        rebuild_rollups(start=start, end=end)
        result = RecomputeResult(
            total, changed, newly, before[0], after[0], before[1], after[1], dry_run
        )
        scope = f"workflow {workflow.slug}" if workflow else "all workflows"
        audit(
            action=SavingsAction.RECOMPUTE,
            actor=user,
            detail=(
                f"{start}…{end}, {scope}: {total} run(s), {changed} re-priced, {newly} costed "
                f"for the first time; avoided {nano_to_str(before[0])} → "
                f"{nano_to_str(after[0])} USD, local {nano_to_str(before[1])} → "
                f"{nano_to_str(after[1])} USD; prices from genai-prices "
                f"{catalogue.package_version()} and admin rows"
            ),
        )
        if dry_run:
            transaction.set_rollback(True)
    return result


def run_energy_estimate(run: Run) -> EnergyReading:
    """Energy for a run costed after the fact: only the estimate is possible then."""
    estimate = estimated_energy(
        cpu_seconds=run.cpu_seconds,
        duration_seconds=run.total_ms / 1000 if run.total_ms is not None else None,
    )
    return EnergyReading(estimate.energy_mj, EnergySource.ESTIMATED, estimate.basis)


def _differs(old: RunCost, new: RunCost) -> bool:
    fields = (
        "priced",
        "price_id",
        "baseline_provider",
        "baseline_model",
        "electricity_nusd_per_kwh",
        "avoided_nusd",
        "local_nusd",
        "net_nusd",
        "batch_rate",
    )
    return any(getattr(old, f) != getattr(new, f) for f in fields)
