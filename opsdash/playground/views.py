"""Playground pages: prompt and chat, compare, history."""

from __future__ import annotations

import json

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.runs.models import Run, Workflow
from opsdash.runs.params import PARAMS, page_inputs
from opsdash.runs.runtime import get_supervisor
from opsdash.typing import AuthedRequest


def _param_inputs() -> list[dict[str, object]]:
    """Every parameter's input, filled with its default (a random seed and no stops: empty)."""
    return page_inputs({p.name: p.default for p in PARAMS if p.default not in (None, ())})


def _context(request: AuthedRequest) -> dict[str, object]:
    selected = request.GET.get("model", "")
    return {
        "models": LocalModel.objects.filter(status=ModelStatus.READY).order_by("name"),
        "loaded": {status.model_id for status in get_supervisor().status()},
        "selected": int(selected) if selected.isdigit() else None,
        "workflows": Workflow.objects.filter(archived_at__isnull=True),  # archived: no runs
        "params": _param_inputs(),
    }


def _own_run(request: AuthedRequest, pk: int) -> Run:
    """A run of the signed-in user: history is personal, not shared between users."""
    return get_object_or_404(
        Run.objects.select_related("model", "workflow"), pk=pk, user=request.user
    )


@requires(Cap.RUN_PROMPTS)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    context = _context(request)
    rerun = request.GET.get("rerun")
    if rerun and rerun.isdigit():
        run = _own_run(request, int(rerun))
        context["rerun"] = json.dumps(
            {
                "model": run.model_id,
                "workflow": run.workflow.slug,
                "prompt": run.prompt,
                "messages": run.messages,
                "params": run.params,
            }
        )
    return render(request, "playground/index.html", context)


@requires(Cap.RUN_PROMPTS)
@require_GET
def compare(request: AuthedRequest) -> HttpResponse:
    return render(request, "playground/compare.html", _context(request))


@requires(Cap.RUN_PROMPTS)
@require_GET
def history(request: AuthedRequest) -> HttpResponse:
    runs = Run.objects.filter(user=request.user).select_related("model", "workflow")
    nodes = sorted(set(runs.exclude(node="").values_list("node", flat=True)))
    status = request.GET.get("status")
    if status:
        runs = runs.filter(status=status)
    node = request.GET.get("node", "")
    if node:
        runs = runs.filter(node=node)
    page = Paginator(runs, 30).get_page(request.GET.get("page"))
    context = {"page": page, "status": status, "node": node, "nodes": nodes}
    return render(request, "playground/history.html", context)


@requires(Cap.RUN_PROMPTS)
@require_GET
def run_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    return render(request, "playground/run.html", {"run": _own_run(request, pk)})
