"""The Placements card on a model's page: where the model runs, Deploy to a node, Remove.

It lives in the fleet app (which may use the catalog) and the catalog page pulls it in with
htmx, so the catalog never imports the fleet. The card polls itself while a placement is under
way, and the forms post to the same services as ``/api/models/{id}/placements``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.catalog.models import LocalModel
from opsdash.fleet import placements
from opsdash.fleet.models import Node, PlacementStatus
from opsdash.typing import AuthedRequest

#: While any placement is in one of these, the card refreshes itself.
UNDER_WAY = frozenset(
    {
        PlacementStatus.PENDING,
        PlacementStatus.FETCHING,
        PlacementStatus.LOADING,
        PlacementStatus.REMOVING,
    }
)


@requires(Cap.VIEW_MODELS)
@require_GET
def placements_card(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    rows = list(model.placements.select_related("node").order_by("node__name"))
    can_manage = can(request.user, Cap.MANAGE_MODELS)
    context = {
        "model": model,
        "fleet": settings.FLEET,
        "node_name": settings.NODE_NAME,
        "here": placements.placements_of(model=model) if not settings.FLEET else [],
        "rows": rows,
        "under_way": any(row.status in UNDER_WAY for row in rows),
        "can_manage": can_manage,
        "choices": placements.deployable_nodes(model=model) if can_manage else [],
    }
    return render(request, "fleet/placements_card.html", context)


@requires(Cap.MANAGE_MODELS)
@require_POST
def deploy(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    name = request.POST.get("node", "").strip()
    node = Node.objects.filter(name=name).first()
    if node is None:
        messages.error(
            request,
            "Choose the node to deploy to."
            if not name
            else f"There is no node named {name[:63]!r}.",
        )
        return redirect("catalog:detail", pk=pk)
    try:
        placements.place_model(model=model, node=node, user=request.user)
    except placements.PlacementRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            f"Deploying “{model.name}” to {node.name}: the node fetches the file from the hub "
            f"and trial-loads it.",
        )
    return redirect("catalog:detail", pk=pk)


@requires(Cap.MANAGE_MODELS)
@require_POST
def remove(request: AuthedRequest, pk: int, node: str) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    found = get_object_or_404(Node, name=node)
    try:
        left = placements.remove_placement(model=model, node=found, user=request.user)
    except placements.PlacementRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            f"“{model.name}” is being removed from {found.name}."
            if left is not None
            else f"“{model.name}” was removed from {found.name}.",
        )
    return redirect("catalog:detail", pk=pk)
