"""Costing runs: what a workflow is compared against, and ``price_run`` at finalize.

``price_run`` is called by ``runs.services.finish_run`` (a run finalizer registered in
``SavingsConfig.ready()``; ``record_pricing_failure`` records it when it raises) inside
the transaction that finalizes the run, so a finalized run always has its frozen ``RunCost`` and
its day's rollups include it (``rollups.py``). Nothing re-prices a run silently: only
``recompute.recompute_savings`` rewrites costs, for a range someone asked for, with an audit
entry. The price book's verbs are in ``pricebook.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from opsdash.core.audit import Target
from opsdash.core.errors import Refusal
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.savings.energy import (
    KEEP_SECONDS,
    Span,
    host_energy,
    run_energy_figures,
)
from opsdash.savings.models import (
    CostingChange,
    EnergySource,
    Price,
    RunCost,
    SavingsAction,
    TokenMethod,
)
from opsdash.savings.money import (
    NANO_PER_USD,
    TOKENS_PER_MTOK,
    MoneyError,
    div_round,
    energy_cost,
    format_usd,
    nano_to_str,
    parse_kwh_price,
)
from opsdash.savings.pricebook import (
    NAME,
    audit,
    normalize_model,
    normalize_provider,
    price_in_effect,
)
from opsdash.savings.rollups import bump_rollup

# Statuses whose tokens a paid API would have billed: it answered (``ok``) or streamed until
# stopped (``cancelled``). An ``error`` or ``interrupted`` run delivered nothing, so it avoided
# nothing, though it still used energy.
BILLABLE = frozenset({RunStatus.OK, RunStatus.CANCELLED})


class CostingRefused(Refusal):
    """A costing change or recompute cannot be made; ``reason`` says why."""


# ----------------------------------------------------------------------------- workflows


def global_electricity_nusd_per_kwh() -> int:
    price: Decimal = settings.ELECTRICITY_USD_PER_KWH
    return int((price * NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Costing:
    """What a workflow's runs were compared against at some moment."""

    baseline_provider: str
    baseline_model: str
    electricity_nusd_per_kwh: int
    electricity_overridden: bool
    since: datetime | None

    @property
    def has_baseline(self) -> bool:
        return bool(self.baseline_provider and self.baseline_model)


def costing_at(workflow: Workflow, at: datetime) -> Costing:
    """The workflow's costing in effect at ``at``; before any recorded change, the baseline the
    workflow was created with and the global electricity price."""
    change = (
        CostingChange.objects.filter(workflow=workflow, effective_from__lte=at)
        .order_by("-effective_from", "-id")
        .first()
    )
    if change is None:
        return Costing(
            normalize_provider(workflow.baseline_provider),
            normalize_model(workflow.baseline_model),
            global_electricity_nusd_per_kwh(),
            False,
            None,
        )
    override = change.electricity_nusd_per_kwh
    return Costing(
        change.baseline_provider,
        change.baseline_model,
        override if override is not None else global_electricity_nusd_per_kwh(),
        override is not None,
        change.effective_from,
    )


def clean_baseline(*, provider: str, model: str, at: datetime | None = None) -> tuple[str, str]:
    """The baseline normalised as the price book names it, refused unless the book has a price
    in effect for it at ``at`` (default now): a mistyped model is never silently "unpriced".

    ``("", "")`` is no baseline, a legal choice (the workflow's runs are then unpriced).
    """
    provider, model = normalize_provider(provider), normalize_model(model)
    if bool(provider) != bool(model):
        raise CostingRefused(
            "Give both the provider and the model of the baseline, or neither.",
            param="baseline_model" if provider else "baseline_provider",
        )
    if not provider:
        return "", ""
    if not (NAME.match(provider) and NAME.match(model)):
        raise CostingRefused(
            "Name the baseline as genai-prices does: a provider such as openai and a model "
            "such as gpt-4o-mini.",
            param="baseline_model",
        )
    if price_in_effect(provider, model, at or timezone.now()) is None:
        priced = Price.objects.filter(provider=provider).exists()
        pick = "pick one of its priced models" if priced else "pick a priced provider and model"
        raise CostingRefused(
            f"{provider}/{model} has no price in the price book; {pick} or add a price on "
            "the Prices page first.",
            param="baseline_model",
        )
    return provider, model


def parse_electricity(text: str | None) -> int | None:
    """A workflow's electricity price in nano-USD per kWh; blank is None (the global price)."""
    if not str(text or "").strip():
        return None
    try:
        return parse_kwh_price(str(text))
    except MoneyError as exc:
        raise CostingRefused(str(exc), param="electricity_usd_per_kwh") from exc


def set_workflow_costing(
    *,
    workflow: Workflow,
    baseline_provider: str,
    baseline_model: str,
    electricity_usd_per_kwh: str = "",
    user: User | None,
    note: str = "",
) -> CostingChange:
    """Change what the workflow's runs are compared against, from now on.

    Runs already finalized keep their frozen costs; runs started from now use the new baseline
    and electricity price (blank: the global ``OPSDASH_ELECTRICITY_USD_PER_KWH``). A baseline
    with no price in effect is refused (``clean_baseline``), nothing written.
    """
    provider, model = clean_baseline(provider=baseline_provider, model=baseline_model)
    override = parse_electricity(electricity_usd_per_kwh)
    now = timezone.now()
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        if not CostingChange.objects.filter(workflow=workflow).exists():
            # Keep what runs so far were costed against before it is overwritten, from the
            # workflow's first moment (its creation, or its first run if one is older).
            first_run = (
                Run.objects.filter(workflow=workflow)
                .order_by("started_at")
                .values_list("started_at", flat=True)
                .first()
            )
            CostingChange.objects.create(
                workflow=workflow,
                baseline_provider=normalize_provider(workflow.baseline_provider),
                baseline_model=normalize_model(workflow.baseline_model),
                electricity_nusd_per_kwh=None,
                effective_from=min(filter(None, [workflow.created_at, first_run])),
                note="the baseline the workflow was created with",
            )
        change = CostingChange.objects.create(
            workflow=workflow,
            baseline_provider=provider,
            baseline_model=model,
            electricity_nusd_per_kwh=override,
            effective_from=now,
            changed_by=user,
            note=note.strip()[:300],
        )
        Workflow.objects.filter(pk=workflow.pk).update(
            baseline_provider=provider, baseline_model=model
        )
        workflow.baseline_provider, workflow.baseline_model = provider, model
        electricity = (
            f"{format_usd(override, precise=True)}/kWh" if override is not None else "global"
        )
        audit(
            action=SavingsAction.CHANGE_COSTING,
            actor=user,
            target=Target.of(workflow, type="workflow", label=workflow.slug),
            detail=(
                f"workflow {workflow.slug}: baseline {provider or '—'}/{model or '—'}, "
                f"electricity {electricity}, from {now:%Y-%m-%d %H:%M:%S %Z}"
            ),
        )
    return change


@dataclass(frozen=True)
class WorkflowCosting:
    """The savings side of creating and editing a workflow, registered with the runs app
    (``opsdash.runs.workflows.costings``) so that it need not import savings."""

    def clean_baseline(self, *, provider: str, model: str) -> tuple[str, str]:
        return clean_baseline(provider=provider, model=model)

    def change_costing(
        self,
        *,
        workflow: Workflow,
        baseline_provider: str | None,
        baseline_model: str | None,
        electricity_usd_per_kwh: str | None,
        note: str,
        user: User | None,
    ) -> bool:
        """``set_workflow_costing`` with None meaning "as it is now"; nothing is written (and
        nothing refused) when the result is the costing already in effect, so renaming a
        workflow whose old baseline lost its price is not refused for it."""
        now = costing_at(workflow, timezone.now())
        current_override = now.electricity_nusd_per_kwh if now.electricity_overridden else None
        provider = now.baseline_provider if baseline_provider is None else baseline_provider
        model = now.baseline_model if baseline_model is None else baseline_model
        override = (
            current_override
            if electricity_usd_per_kwh is None
            else parse_electricity(electricity_usd_per_kwh)
        )
        wanted = (normalize_provider(provider), normalize_model(model), override)
        if wanted == (now.baseline_provider, now.baseline_model, current_override):
            return False
        set_workflow_costing(
            workflow=workflow,
            baseline_provider=provider,
            baseline_model=model,
            electricity_usd_per_kwh=nano_to_str(override) if override is not None else "",
            user=user,
            note=note,
        )
        return True


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class EnergyReading:
    energy_mj: int
    source: EnergySource
    basis: str
    devices: list[str] = field(default_factory=list)


def _overlapping_spans(run: Run, devices: frozenset[str]) -> list[Span]:
    assert run.finished_at is not None
    # A measured run fits in the meter's history, so partners started at most that long before
    # this run: the bound keeps the query on the started_at index however long the ledger.
    earliest = run.started_at - timedelta(seconds=KEEP_SECONDS)
    finished = (
        RunCost.objects.filter(
            energy_source=EnergySource.MEASURED,
            run__host=run.host,
            run__started_at__gt=earliest,
            run__started_at__lt=run.finished_at,
            run__finished_at__gt=run.started_at,
        )
        .exclude(run_id=run.pk)
        .values_list("run__started_at", "run__finished_at", "energy_devices")
    )
    spans = [
        Span(start.timestamp(), end.timestamp(), frozenset(used))
        for start, end, used in finished
        if end is not None
    ]
    # Runs still generating share the device too; their devices are not known yet, so they
    # are taken to share this run's (under-counting rather than double-counting).
    now = timezone.now().timestamp()
    running = (
        Run.objects.filter(status=RunStatus.RUNNING, host=run.host, started_at__lt=run.finished_at)
        .exclude(pk=run.pk)
        .values_list("started_at", flat=True)
    )
    spans.extend(Span(start.timestamp(), now, devices) for start in running)
    return spans


def run_energy(run: Run) -> EnergyReading:
    """Measured when this host's counters covered the whole run, else estimated (energy.py).

    A fleet run was generated on a node: its energy is what the node reported (measured by
    its counters or estimated there), and without a report it is estimated from the run's CPU
    time; the hub's own counters saw none of it.
    """
    if run.node_energy is not None:
        reported = run.node_energy
        basis = f"node {run.node}: {reported['basis'] or 'as the node reported it'}"
        return EnergyReading(
            round(reported["joules"] * 1000),
            EnergySource(reported["source"]),
            basis,
            list(reported["devices"]),
        )
    local = not settings.FLEET and run.finished_at is not None
    meter = host_energy() if local else None  # a reading at its end
    # The arithmetic is framework-free (energy.py): a fleet agent prices its runs the same way.
    figures = run_energy_figures(
        meter,
        pid=run.runner_pid,
        start=run.started_at.timestamp(),
        end=run.finished_at.timestamp() if run.finished_at is not None else None,
        others=lambda devices: _overlapping_spans(run, devices),
        cpu_seconds=run.cpu_seconds,
        duration_seconds=run.total_ms / 1000 if run.total_ms is not None else None,
    )
    return EnergyReading(
        figures.energy_mj, EnergySource(figures.source), figures.basis, figures.devices
    )


def recorded_energy(cost: RunCost) -> EnergyReading:
    return EnergyReading(
        cost.energy_mj,
        EnergySource(cost.energy_source),
        cost.energy_basis,
        list(cost.energy_devices or []),
    )


def compute_cost(run: Run, *, energy: EnergyReading, price: Price | None = None) -> RunCost:
    """The run's costing at the prices in effect when it started (unsaved).

    avoided = prompt tokens × input price + completion tokens × output price (one rounding to
    the nano-dollar; a batch run's at the row's batch prices when it has them), local = energy ×
    electricity price, net = avoided − local.
    """
    costing = costing_at(run.workflow, run.started_at)
    if price is None and costing.has_baseline:
        price = price_in_effect(costing.baseline_provider, costing.baseline_model, run.started_at)
    # A batch run replaces a request to the provider's batch API: its batch price where the
    # row has one (OpenAI's is half the interactive one), else the interactive price.
    batch_rate = price is not None and run.source == RunSource.BATCH and price.has_batch_price
    avoided = 0
    if price is not None and run.status in BILLABLE:
        input_price, output_price = (
            (price.batch_input_nusd_per_mtok, price.batch_output_nusd_per_mtok)
            if batch_rate
            else (price.input_nusd_per_mtok, price.output_nusd_per_mtok)
        )
        assert input_price is not None and output_price is not None
        avoided = div_round(
            (run.prompt_tokens or 0) * input_price + (run.completion_tokens or 0) * output_price,
            TOKENS_PER_MTOK,
        )
    local = energy_cost(energy.energy_mj, costing.electricity_nusd_per_kwh)
    return RunCost(
        run=run,
        priced=price is not None,
        price=price,
        baseline_provider=costing.baseline_provider,
        baseline_model=costing.baseline_model,
        electricity_nusd_per_kwh=costing.electricity_nusd_per_kwh,
        avoided_nusd=avoided,
        local_nusd=local,
        net_nusd=avoided - local if price is not None else 0,
        energy_mj=energy.energy_mj,
        energy_source=energy.source,
        energy_basis=energy.basis[:200],
        energy_devices=energy.devices,
        token_method=TokenMethod.LOCAL_TOKENIZER,
        priced_at=timezone.now(),
        batch_rate=batch_rate,
    )


def price_run(*, run: Run) -> RunCost | None:
    """Cost a run that has just been finalized and add it to its day's rollup.

    Called inside ``finish_run``'s transaction. The costing is frozen: a run finalized again
    (it should not be) replaces its own contribution, nothing else ever changes it except
    ``recompute_savings``.
    """
    if run.status == RunStatus.RUNNING or run.finished_at is None:
        return None
    with transaction.atomic():
        previous = RunCost.objects.select_for_update().filter(run_id=run.pk).first()
        cost = compute_cost(run, energy=run_energy(run))
        if previous is not None:
            bump_rollup(run, previous, -1)
            cost.revision = previous.revision + 1
        cost.save()
        bump_rollup(run, cost, +1)
    return cost


def record_pricing_failure(*, run: Run, error: Exception) -> RunCost:
    """The cost of a run whose pricing raised (``price_run``'s writes already rolled back).

    The run is unpriced with the reason in ``error``, counted in its day's rollup as an unpriced
    run, so the failure shows on the run page and in savings instead of the run going missing.
    """
    previous = RunCost.objects.select_for_update().filter(run_id=run.pk).first()
    if previous is not None:
        bump_rollup(run, previous, -1)
    cost = RunCost(
        run=run,
        priced=False,
        electricity_nusd_per_kwh=global_electricity_nusd_per_kwh(),
        avoided_nusd=0,
        local_nusd=0,
        net_nusd=0,
        energy_mj=0,
        energy_source=EnergySource.ESTIMATED,
        energy_basis="not known: costing failed",
        priced_at=timezone.now(),
        revision=previous.revision + 1 if previous is not None else 1,
        error=(f"{type(error).__name__}: {error}")[:300],
    )
    cost.save()
    bump_rollup(run, cost, +1)
    return cost
