"""Savings pages: the overview, a workflow, the price book; thin callers of reports and services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.core import audit
from opsdash.runs.models import Workflow
from opsdash.savings import pricebook, reports, services
from opsdash.savings.days import report_today, report_zone
from opsdash.savings.filters import PRESETS, FilterError, known_nodes, parse_filters
from opsdash.savings.forms import CostingForm, PriceForm
from opsdash.savings.models import CostingChange, Price, PriceSource
from opsdash.typing import AuthedRequest


def _render(
    request: AuthedRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    # Times on these pages read in the report time zone, like the days they are bucketed in.
    with timezone.override(report_zone()):
        return render(request, template, context, status=status)


def _workflow_for_viewer(request: AuthedRequest, slug: str) -> Workflow:
    return get_object_or_404(Workflow, slug=slug)


def _filters(request: AuthedRequest, workflow: Workflow | None = None) -> tuple[Any, str]:
    """The page's filters, or the default range and the reason the asked-for one was refused."""
    params = request.GET.copy()
    if workflow is not None:
        params["workflow"] = workflow.slug
    try:
        return parse_filters(params), ""
    except FilterError as exc:
        fallback = {"workflow": workflow.slug} if workflow is not None else {}
        return parse_filters(fallback), str(exc)


def _chart(report: reports.Report) -> dict[str, Any]:
    """Daily series for the chart, in nano-USD integers; only the browser divides them."""
    return {
        "today": report_today().isoformat(),  # labelled "Today" on the x axis
        "days": [day.isoformat() for day, _ in report.days],
        "avoided": [f.avoided_nusd for _, f in report.days],
        "local": [f.local_nusd for _, f in report.days],
        "net": [f.net_nusd for _, f in report.days],
    }


def _baseline_url(report: reports.Report) -> str:
    """Where an admin gives a workflow a baseline: the edit page of the one shown, else of the
    first without a price, else the workflows table."""
    if report.filters.workflow is not None:
        return reverse("savings:workflow_edit", args=[report.filters.workflow.slug])
    for line in report.workflows:
        if line.pricing == "unpriced":
            return reverse("savings:workflow_edit", args=[line.workflow.slug])
    return "#workflows" if report.workflows else ""


def _common(request: AuthedRequest, report: reports.Report, error: str) -> dict[str, Any]:
    return {
        "baseline_url": _baseline_url(report),
        "report": report,
        "filters": report.filters,
        "totals": report.totals,
        "presets": PRESETS,
        "chart": _chart(report),
        "error": error,
        "time_zone": settings.REPORT_TIME_ZONE,
        "csv_url": f"{reverse('api:export_csv')}?{report.filters.query()}",
        "can_manage": can(request.user, Cap.MANAGE_WORKFLOWS),
        # The node filter's choices: the nodes with costed runs (one node has nothing to pick).
        "known_nodes": known_nodes(),
    }


@requires(Cap.VIEW_SAVINGS)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    filters, error = _filters(request)
    if filters.workflow is not None:
        return redirect(
            f"{reverse('savings:workflow', args=[filters.workflow.slug])}?{filters.query()}"
        )
    report = reports.overview(filters)
    context = _common(request, report, error) | {
        "month": reports.month_comparison(node=filters.node)
    }
    return _render(request, "savings/index.html", context, status=400 if error else 200)


@requires(Cap.VIEW_SAVINGS)
@require_GET
def workflow_detail(request: AuthedRequest, slug: str) -> HttpResponse:
    workflow = _workflow_for_viewer(request, slug)
    filters, error = _filters(request, workflow)
    report = reports.workflow_report(filters)
    costing = reports.costing_now(workflow)
    price_now = (
        pricebook.price_in_effect(costing.baseline_provider, costing.baseline_model, timezone.now())
        if costing.has_baseline
        else None
    )
    context = _common(request, report, error) | {
        "workflow": workflow,
        "line": report.workflows[0],
        "month": reports.month_comparison(workflow, node=filters.node),
        "costing": costing,
        "price_now": price_now,
        "global_electricity": services.global_electricity_nusd_per_kwh(),
        "history": CostingChange.objects.filter(workflow=workflow).select_related("changed_by"),
        "recent": reports.recent_costs(workflow, node=filters.node),
        "form": CostingForm(
            initial={
                "baseline_provider": costing.baseline_provider,
                "baseline_model": costing.baseline_model,
            }
        ),
        "known_models": _known_models(),
    }
    return _render(request, "savings/workflow.html", context, status=400 if error else 200)


def _known_models() -> list[tuple[str, str]]:
    return list(
        Price.objects.values_list("provider", "model").distinct().order_by("provider", "model")
    )


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def workflow_costing(request: AuthedRequest, slug: str) -> HttpResponse:
    workflow = _workflow_for_viewer(request, slug)
    form = CostingForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the baseline: " + form.errors.as_text())
        return redirect("savings:workflow", slug=slug)
    try:
        services.set_workflow_costing(
            workflow=workflow,
            baseline_provider=form.cleaned_data["baseline_provider"],
            baseline_model=form.cleaned_data["baseline_model"],
            electricity_usd_per_kwh=form.cleaned_data["electricity_usd_per_kwh"],
            note=form.cleaned_data["note"],
            user=request.user,
        )
    except services.CostingRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            "Saved. Runs from now on are costed with it; earlier runs keep their figures.",
        )
    return redirect("savings:workflow", slug=slug)


def _prices_page(
    request: AuthedRequest, form: PriceForm, *, error: str = "", status: int = 200
) -> HttpResponse:
    show = request.GET.get("show", "current")
    query = request.GET.get("q", "").strip().lower()
    rows = Price.objects.select_related("created_by")
    if show == "current":
        now = timezone.now()
        rows = rows.filter(Q(effective_to__isnull=True) | Q(effective_to__gt=now))
    if query:
        rows = rows.filter(Q(provider__icontains=query) | Q(model__icontains=query))
    context = {
        "rows": rows,
        "show": show,
        "q": query,
        "form": form,
        "error": error,
        "can_manage": can(request.user, Cap.MANAGE_WORKFLOWS),
        "entries": audit.entries(action=("price", "savings", "workflow"))[:20],
        "time_zone": settings.REPORT_TIME_ZONE,
        "now": timezone.now(),
    }
    return _render(request, "savings/prices.html", context, status=status)


@requires(Cap.VIEW_WORKFLOWS)
@require_GET
def prices(request: AuthedRequest) -> HttpResponse:
    return _prices_page(request, PriceForm(initial={"currency": "USD"}))


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def price_add(request: AuthedRequest) -> HttpResponse:
    form = PriceForm(request.POST)
    if not form.is_valid():
        return _prices_page(request, form, error=_first_error(form), status=400)
    data = form.cleaned_data
    try:
        price = pricebook.add_price(
            price=pricebook.PriceInput(
                provider=data["provider"],
                model=data["model"],
                input_price=data["input_price"],
                output_price=data["output_price"],
                cached_input_price=data["cached_input_price"],
                batch_input_price=data["batch_input_price"],
                batch_output_price=data["batch_output_price"],
                currency=data["currency"] or "USD",
                effective_from=data["effective_from"],
                note=data["note"],
            ),
            user=request.user,
            source=PriceSource.ADMIN,
        )
    except pricebook.PriceRefused as exc:
        return _prices_page(request, form, error=exc.reason, status=400)
    messages.success(
        request,
        f"Price for {price.provider}/{price.model} added from "
        f"{timezone.localtime(price.effective_from, report_zone()):%Y-%m-%d %H:%M}. "
        "Runs already costed keep their figures.",
    )
    return redirect(f"{reverse('savings:prices')}?q={price.model}")


def _first_error(form: PriceForm) -> str:
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ") if field in form.fields else ""
        return f"{label}: {errors[0]}" if label else str(errors[0])
    return "Check the form."


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def price_close(request: AuthedRequest, pk: int) -> HttpResponse:
    price = get_object_or_404(Price, pk=pk)
    try:
        pricebook.close_price(price=price, user=request.user)
    except pricebook.PriceRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request, f"Closed the {price.source} price of {price.provider}/{price.model}."
        )
    return redirect(f"{reverse('savings:prices')}?q={price.model}")
