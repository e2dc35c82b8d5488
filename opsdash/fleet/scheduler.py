"""Which node serves a request for a model: the routing rule of fleet mode, in one place.

A node can take a request for a model when it is ``healthy`` (approved, heard from within
``NODE_UNHEALTHY_SECONDS``), not draining, and holds a ``ready`` placement of the model. Among
those, the shortest queue goes first (the least busy node answers soonest), then a node that
already has the model loaded (no load time), then the name, so the order is stable and a
test, or an operator reading the code, can predict it.

When none can, ``why_unroutable`` says why in a sentence a person can act on: the model is
deployed nowhere, its placements failed or are still on their way, or the nodes holding it
are offline, unhealthy or draining.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from opsdash.catalog.models import LocalModel
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus


def loaded_model_ids(node: Node) -> set[int]:
    """The ids of the models ``node`` last reported loaded.

    A heartbeat's ``loaded`` is a list of model ids or of runner entries shaped like
    ``/api/runtime``'s (``{"model": id, …}``); both are read, anything else is ignored.
    """
    ids: set[int] = set()
    for entry in node.loaded or []:
        value: Any = entry
        if isinstance(entry, dict):
            value = entry.get("model", entry.get("model_id"))
        if isinstance(value, int) and not isinstance(value, bool):
            ids.add(value)
    return ids


def _fresh_since() -> Any:
    return timezone.now() - timedelta(seconds=settings.NODE_UNHEALTHY_SECONDS)


def routable_nodes(*, model_id: int) -> list[Node]:
    """The nodes that may serve ``model_id`` now, the one to try first first (module docstring).

    ``last_seen`` is checked here as well as ``status``: the health sweep runs every few
    seconds, and a request should not wait on a node that stopped answering since the last one.
    """
    nodes = Node.objects.filter(
        status=NodeStatus.HEALTHY,
        draining=False,
        last_seen__gte=_fresh_since(),
        placements__model_id=model_id,
        placements__status=PlacementStatus.READY,
    ).distinct()
    return sorted(
        nodes, key=lambda n: (n.queue_length, model_id not in loaded_model_ids(n), n.name)
    )


def _node_state(node: Node) -> str:
    """Why ``node`` takes no requests, in a few words."""
    if node.draining or node.status == NodeStatus.DRAINING:
        return "draining"
    if node.status == NodeStatus.PENDING:
        return "waiting for an admin's approval"
    if node.status == NodeStatus.HEALTHY:  # healthy on record, but its heartbeat is late
        return "not heard from recently"
    return str(node.status)


def _placement_state(placement: Placement) -> str:
    if placement.status == PlacementStatus.FAILED:
        return f"failed ({placement.error.rstrip('.')})" if placement.error else "failed"
    if placement.status == PlacementStatus.REMOVING:
        return "being removed"
    return f"still {placement.status}"  # pending, fetching, loading


def _listing(parts: list[str]) -> str:
    return "; ".join(parts)


def why_unroutable(*, model_id: int) -> str:
    """A sentence naming why no node can serve ``model_id`` now (checked in that order:
    the model, its placements, the nodes holding the ready ones)."""
    model = LocalModel.objects.filter(pk=model_id).first()
    if model is None:
        return f"There is no model {model_id}."
    name = f"“{model.name}”"
    placements = list(Placement.objects.filter(model_id=model_id).select_related("node"))
    if not placements:
        return (
            f"{name} is not deployed to any node; deploy it to a node from its model page "
            f"(or POST /api/models/{model_id}/placements) and try again."
        )
    ready = [p for p in placements if p.status == PlacementStatus.READY]
    if not ready:
        states = _listing([f"on {p.node.name} it is {_placement_state(p)}" for p in placements])
        return f"{name} is not ready on any node: {states}."
    fresh = _fresh_since()
    states = _listing(
        [
            f"{p.node.name} is {_node_state(p.node)}"
            if p.node.status != NodeStatus.HEALTHY
            or p.node.draining
            or p.node.last_seen is None
            or p.node.last_seen < fresh
            else f"{p.node.name} is available again"
            for p in ready
        ]
    )
    return (
        f"No node can serve {name} now: it is ready only on nodes that take no requests "
        f"({states}). Wait for a node to come back, resume a drained one, or deploy the model "
        "to another node."
    )
