"""The workflow edit page (admins): name, description, baseline, electricity; archive, restore.

Thin callers of ``opsdash.runs.workflows`` (which ``PATCH /api/workflows/{slug}`` calls too), so
the page and the API refuse the same things with the same sentences.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.core.errors import Refusal
from opsdash.runs import workflows
from opsdash.runs.models import Workflow
from opsdash.runs.services import PLAYGROUND_SLUG
from opsdash.savings import services
from opsdash.savings.days import report_zone
from opsdash.savings.forms import WorkflowForm
from opsdash.savings.models import CostingChange
from opsdash.savings.money import nano_to_str
from opsdash.typing import AuthedRequest


def _workflow_for_admin(slug: str) -> Workflow:
    return get_object_or_404(Workflow, slug=slug)


def _initial(workflow: Workflow) -> dict[str, str]:
    costing = services.costing_at(workflow, timezone.now())
    override = costing.electricity_nusd_per_kwh if costing.electricity_overridden else None
    return {
        "name": workflow.name,
        "description": workflow.description,
        "baseline_provider": costing.baseline_provider,
        "baseline_model": costing.baseline_model,
        "electricity_usd_per_kwh": nano_to_str(override) if override is not None else "",
        "note": "",
    }


def _first_error(form: WorkflowForm) -> str:
    for name, errors in form.errors.items():
        label = form.fields[name].label or name.replace("_", " ").capitalize()
        return f"{label}: {errors[0]}"
    return "Check the form."


@requires(Cap.MANAGE_WORKFLOWS)
@require_http_methods(["GET", "POST"])
def workflow_edit(request: AuthedRequest, slug: str) -> HttpResponse:
    workflow = _workflow_for_admin(slug)
    error = ""
    if request.method == "POST":
        form = WorkflowForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                changed = workflows.edit_workflow(
                    workflow=workflow,
                    user=request.user,
                    name=data["name"],
                    description=data["description"],
                    baseline_provider=data["baseline_provider"],
                    baseline_model=data["baseline_model"],
                    electricity_usd_per_kwh=data["electricity_usd_per_kwh"],
                    note=data["note"],
                )
            except Refusal as exc:
                error = exc.reason
            else:
                messages.success(
                    request,
                    "Saved. Runs from now on are costed with it; earlier runs keep their figures."
                    if changed
                    else "Nothing changed.",
                )
                return redirect("savings:workflow", slug=workflow.slug)
        else:
            error = _first_error(form)
    else:
        form = WorkflowForm(initial=_initial(workflow))
    values = {name: form[name].value() or "" for name in form.fields}
    context = {
        "workflow": workflow,
        "values": values,
        "error": error,
        "global_electricity": services.global_electricity_nusd_per_kwh(),
        "history": CostingChange.objects.filter(workflow=workflow).select_related("changed_by"),
        "can_archive": workflow.slug != PLAYGROUND_SLUG,
        "time_zone": settings.REPORT_TIME_ZONE,
    }
    with timezone.override(report_zone()):
        return render(request, "savings/workflow_edit.html", context, status=400 if error else 200)


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def workflow_archive(request: AuthedRequest, slug: str) -> HttpResponse:
    workflow = _workflow_for_admin(slug)
    try:
        workflows.archive_workflow(workflow=workflow, user=request.user)
    except Refusal as exc:
        messages.error(request, exc.reason)
        return redirect("savings:workflow_edit", slug=workflow.slug)
    messages.success(
        request,
        f"Archived {workflow.name}: it takes no new runs and its API keys get 401; its history "
        "stays on the savings pages. Restore it here to use it again.",
    )
    return redirect("savings:workflow_edit", slug=workflow.slug)


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def workflow_restore(request: AuthedRequest, slug: str) -> HttpResponse:
    workflow = _workflow_for_admin(slug)
    try:
        workflows.restore_workflow(workflow=workflow, user=request.user)
    except Refusal as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(request, f"Restored {workflow.name}: it takes runs again.")
    return redirect("savings:workflow_edit", slug=workflow.slug)
