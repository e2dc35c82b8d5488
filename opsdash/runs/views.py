"""Runtime controls shown on a model's page: is it loaded, load it, unload it.

They live in ``runs`` (which may use ``catalog``), and the catalog page pulls the card in with
htmx, so the catalog never imports the runtime.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from inference.errors import InferenceError
from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.runs.runtime import get_supervisor
from opsdash.runs.services import model_spec
from opsdash.typing import AuthedRequest


def _status_for(model_id: int) -> object | None:
    return next((s for s in get_supervisor().status() if s.model_id == model_id), None)


@requires(Cap.VIEW_MODELS)
@require_GET
def runtime_card(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    context = {"model": model, "status": _status_for(model.pk)}
    return render(request, "runs/runtime_card.html", context)


@requires(Cap.RUN_PROMPTS)
@require_POST
def load(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    if model.status != ModelStatus.READY:
        messages.error(request, f"“{model.name}” is {model.status}; only ready models can load.")
    else:
        try:
            async_to_sync(get_supervisor().load)(model_spec(model))
        except InferenceError as exc:
            messages.error(request, exc.reason)
        else:
            messages.success(request, f"“{model.name}” is loaded.")
    return redirect("catalog:detail", pk=pk)


@requires(Cap.RUN_PROMPTS)
@require_POST
def unload(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    if async_to_sync(get_supervisor().unload)(model.pk):
        messages.success(request, f"“{model.name}” is unloaded; its memory is back.")
    else:
        messages.info(request, f"“{model.name}” was not loaded.")
    return redirect("catalog:detail", pk=pk)
