"""Fleet pages: all nodes at a glance, one node, and the admin's actions and node tokens."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from opsdash.accounts.permissions import RoleRequired, requires
from opsdash.accounts.roles import Cap, can
from opsdash.core import audit as audit_log
from opsdash.fleet import services
from opsdash.fleet.figures import figures_of, telemetry_host
from opsdash.fleet.models import NodeToken, Placement
from opsdash.runs.models import Run
from opsdash.typing import AuthedRequest


def _back(request: AuthedRequest) -> HttpResponse:
    """Where a form came from (the list or a node's page), else the list."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("fleet:list")


def _hub_url(request: AuthedRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@requires(Cap.VIEW_NODES)
@require_http_methods(["GET", "POST"])
def node_list(request: AuthedRequest) -> HttpResponse:
    """Every node: status, last heartbeat, CPU, memory, GPUs, loaded models, queue. For admins
    also the node tokens; POST creates one and shows its secret once."""
    new_secret = None
    if request.method == "POST":
        if not can(request.user, Cap.MANAGE_NODES):
            raise RoleRequired(user=request.user, cap=Cap.MANAGE_NODES, what="Creating node tokens")
        token, new_secret = services.create_node_token(
            name=request.POST.get("name", ""), user=request.user
        )
        messages.success(request, f"Node token “{token}” created.")
    nodes = [figures_of(view) for view in services.list_nodes()]
    manage = can(request.user, Cap.MANAGE_NODES)
    context = {
        "nodes": nodes,
        "fleet": settings.FLEET,
        "can_manage": manage,
        "tokens": NodeToken.objects.select_related("created_by") if manage else [],
        "new_secret": new_secret,
        "hub_url": _hub_url(request),
        "unhealthy_seconds": settings.NODE_UNHEALTHY_SECONDS,
        "offline_seconds": settings.NODE_OFFLINE_SECONDS,
    }
    if request.htmx:
        return render(request, "fleet/nodes.html#table", context)
    return render(request, "fleet/nodes.html", context)


@requires(Cap.VIEW_NODES)
@require_GET
def node_detail(request: AuthedRequest, name: str) -> HttpResponse:
    view = services.get_node_view(name=name)
    if view is None:
        raise Http404(f"There is no node named “{name[:80]}”.")
    context = {
        "node": figures_of(view),
        "fleet": settings.FLEET,
        "can_manage": can(request.user, Cap.MANAGE_NODES),
        "placements": Placement.objects.filter(node__name=name).select_related("model"),
        "runs": Run.objects.filter(node=name)
        .select_related("model", "workflow")
        .order_by("-started_at")[:20],
        "audit": audit_log.entries(target_type="node", target_id=name)[:50],
        "telemetry_url": f"{reverse('telemetry:index')}?host={telemetry_host(view)}",
        "hub_url": _hub_url(request),
    }
    if request.htmx:
        return render(request, "fleet/node.html#live", context)
    return render(request, "fleet/node.html", context)


def _act(request: AuthedRequest, name: str, verb: str) -> HttpResponse:
    action = {
        "approve": services.approve_node,
        "drain": services.drain_node,
        "resume": services.resume_node,
        "delete": services.delete_node,
    }[verb]
    try:
        action(node=services.node_for_admin(name=name), user=request.user)
    except services.NodeRefused as exc:
        messages.error(request, exc.reason)
        return _back(request)
    done = {
        "approve": "approved: it serves while its heartbeats arrive",
        "drain": "draining: it finishes what it has and is sent nothing new",
        "resume": "resumed: it takes new requests again",
        "delete": "deleted, with its identity: its agent is refused from now on",
    }[verb]
    messages.success(request, f"Node “{name}” {done}.")
    if verb == "delete":
        return redirect("fleet:list")
    return _back(request)


@requires(Cap.MANAGE_NODES)
@require_POST
def approve(request: AuthedRequest, name: str) -> HttpResponse:
    return _act(request, name, "approve")


@requires(Cap.MANAGE_NODES)
@require_POST
def drain(request: AuthedRequest, name: str) -> HttpResponse:
    return _act(request, name, "drain")


@requires(Cap.MANAGE_NODES)
@require_POST
def resume(request: AuthedRequest, name: str) -> HttpResponse:
    return _act(request, name, "resume")


@requires(Cap.MANAGE_NODES)
@require_POST
def delete(request: AuthedRequest, name: str) -> HttpResponse:
    return _act(request, name, "delete")


@requires(Cap.MANAGE_NODES)
@require_POST
def revoke_token(request: AuthedRequest, pk: int) -> HttpResponse:
    token = NodeToken.objects.filter(pk=pk).first()
    if token is None:
        raise Http404("There is no such node token.")
    try:
        services.revoke_node_token(token=token, user=request.user)
    except services.NodeRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            f"Node token “{token}” revoked: no node can enroll with it; enrolled nodes keep "
            "their own identity.",
        )
    return redirect(f"{reverse('fleet:list')}#tokens")
