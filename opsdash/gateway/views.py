"""The gateway pages: base URL and client snippets; each workflow's API keys."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Max, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.gateway import services
from opsdash.gateway.models import WorkflowKey
from opsdash.runs.models import Run, RunSource, Workflow
from opsdash.typing import AuthedRequest

SNIPPET_MODEL_PLACEHOLDER = "MODEL_ID"


def _workflow(slug: str) -> Workflow:
    return get_object_or_404(Workflow, slug=slug)


def _base_url(request: AuthedRequest) -> str:
    return request.build_absolute_uri("/v1")


@requires(Cap.VIEW_WORKFLOWS)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    """Where to point an OpenAI client, copyable snippets, and the workflows' keys at a glance.

    Archived workflows are listed only with ``?archived=1``."""
    archived = request.GET.get("archived") == "1"
    workflows = list(
        Workflow.objects.filter(archived_at__isnull=not archived).annotate(
            active_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True)),
            last_used_at=Max("api_keys__last_used_at"),
        )
    )
    runs = dict(
        Run.objects.filter(source=RunSource.GATEWAY)
        .values_list("workflow")
        .annotate(n=Count("id"))
        .values_list("workflow", "n")
    )
    for workflow in workflows:
        workflow.gateway_runs = runs.get(workflow.pk, 0)  # type: ignore[attr-defined]
    models = LocalModel.objects.filter(status=ModelStatus.READY).order_by("slug")
    first = models.first()
    return render(
        request,
        "gateway/index.html",
        {
            "base_url": _base_url(request),
            "workflows": workflows,
            "archived": archived,
            "models": models,
            "model_id": first.slug if first else SNIPPET_MODEL_PLACEHOLDER,
        },
    )


def _workflow_page(
    request: AuthedRequest, workflow: Workflow, *, new_secret: str | None = None
) -> HttpResponse:
    keys = WorkflowKey.objects.filter(workflow=workflow).select_related("created_by")
    return render(
        request,
        "gateway/workflow.html",
        {
            "workflow": workflow,
            "keys": keys,
            "new_secret": new_secret,
            "base_url": _base_url(request),
        },
    )


@requires(Cap.VIEW_WORKFLOWS)
@require_GET
def workflow_keys(request: AuthedRequest, slug: str) -> HttpResponse:
    """A workflow's API keys: prefix, last use, request count; admins create and revoke."""
    return _workflow_page(request, _workflow(slug))


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def create_key(request: AuthedRequest, slug: str) -> HttpResponse:
    """Issue a key and show its secret once, in this response only (never stored, no redirect)."""
    workflow = _workflow(slug)
    issued = services.create_api_key(
        workflow=workflow, name=request.POST.get("name", ""), user=request.user
    )
    return _workflow_page(request, workflow, new_secret=issued.secret)


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def revoke_key(request: AuthedRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(WorkflowKey.objects.select_related("workflow"), pk=pk)
    services.revoke_api_key(key=key, user=request.user)
    messages.success(
        request, f"Key “{key.name}” ({key.prefix}…) revoked. Calls using it now get 401."
    )
    return redirect("gateway:workflow", slug=key.workflow.slug)
