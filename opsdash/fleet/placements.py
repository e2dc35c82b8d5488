"""Which model runs on which node: placing a model, removing it, and the agents' progress.

Desired state lives in ``Placement`` rows; what a node is told follows from them. An admin's
``place_model`` / ``remove_placement`` tells a connected node at once (``place`` / ``unplace``
through the channel layer, to whichever hub process holds its socket), and ``placement_specs``
is the whole desired list an agent gets in ``welcome`` on every (re)connect: the agent fetches
what it lacks and drops (reporting ``removed``) any copy that is not in the list, so a node
that was away when an admin changed its placements converges by itself.

A row goes ``pending → fetching → loading → ready`` (or ``failed``) as the agent reports
(``record_placement``); ``removing`` while a connected node deletes its copy, and the row goes
once the agent confirms. Only ``ready`` rows are routed to (``opsdash.fleet.scheduler``).

Embedded mode has no placements: the one node is this machine, where every ready model runs,
so ``placements_of`` answers one entry derived from the model itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q

from opsdash.catalog.install import NODE_HOST_PREFIX
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.audit import Outcome, Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.fleet import protocol
from opsdash.fleet.link import tell_node
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus
from opsdash.runs import capacity

logger = logging.getLogger(__name__)

#: What an agent reports once it has deleted its copy (not a stored status: the row goes).
REMOVED = protocol.PLACEMENT_REMOVED
#: The statuses an agent may report for a placement job.
REPORTED = frozenset(
    {PlacementStatus.FETCHING, PlacementStatus.LOADING, PlacementStatus.READY}
    | {PlacementStatus.FAILED}
)


class PlacementRefused(Refusal):
    """A placement an admin asked for that cannot be made; ``reason`` says why."""

    default_code = Code.CONFLICT


class PlacementSpec(TypedDict):
    model_id: int
    sha256: str
    name: str
    slug: str
    backend: str
    model_type: str
    size_bytes: int | None
    file_url: str
    #: How many requests the node's runner decodes together, and the memory that takes
    #: (``opsdash.runs.capacity``); an agent that predates them loads one at a time.
    parallel_sequences: int
    estimated_bytes: int


class PlacementView(TypedDict):
    node: str
    status: str
    error: str
    bytes_done: int


# ----------------------------------------------------------------------------- reading


def file_url(sha256: str) -> str:
    """The hub path an agent fetches a model file from (``opsdash.fleet.files``)."""
    return f"/api/fleet/files/{sha256}"


def placement_spec(model: LocalModel) -> PlacementSpec:
    """What a node needs to fetch, check and load ``model`` (protocol.py's PlacementSpec)."""
    n = capacity.parallel_sequences(model)
    return {
        "model_id": model.pk,
        "sha256": model.sha256,
        "name": model.name,
        "slug": model.slug,
        "backend": model.backend,
        "model_type": model.model_type,
        "size_bytes": model.size_bytes,
        "file_url": file_url(model.sha256),
        "parallel_sequences": n,
        "estimated_bytes": capacity.estimated_bytes(model, parallel_sequences=n),
    }


def placement_specs(*, node: Node) -> list[PlacementSpec]:
    """Every model ``node`` should hold (for ``welcome``): its placements not being removed, of
    models still ready. Anything else the agent holds it deletes."""
    # A model the node is installing from its own disk is listed too (it has no sha256 yet),
    # so a reconnect in the middle of that install does not delete what it has installed.
    installing_here = Q(
        model__status=ModelStatus.INSTALLING, model__install_host=f"{NODE_HOST_PREFIX}{node.name}"
    )
    placements = (
        Placement.objects.filter(node=node)
        .filter(Q(model__status=ModelStatus.READY) | installing_here)
        .exclude(status=PlacementStatus.REMOVING)
        .select_related("model")
        .order_by("model_id")
    )
    return [placement_spec(p.model) for p in placements]


def placement_view(placement: Placement) -> PlacementView:
    return {
        "node": placement.node.name,
        "status": placement.status,
        "error": placement.error,
        "bytes_done": placement.bytes_done,
    }


#: Embedded mode: the local node's state of a model is the model's own.
_EMBEDDED_STATUS = {
    ModelStatus.READY: PlacementStatus.READY,
    ModelStatus.INSTALLING: PlacementStatus.FETCHING,
    ModelStatus.FAILED: PlacementStatus.FAILED,
}


def placements_of(*, model: LocalModel) -> list[PlacementView]:
    """Where ``model`` is, for ``GET /api/models/{id}`` and the model page.

    Fleet mode: its placement rows, by node name. Embedded: one entry for this machine
    (``NODE_NAME``) whose status follows the model (ready, installing → fetching, failed); a
    retired or deleted model is on no node.
    """
    if not settings.FLEET:
        status = _EMBEDDED_STATUS.get(ModelStatus(model.status))
        if status is None:
            return []
        return [
            {
                "node": settings.NODE_NAME,
                "status": status,
                "error": model.error if status == PlacementStatus.FAILED else "",
                "bytes_done": model.bytes_done if status == PlacementStatus.FETCHING else 0,
            }
        ]
    return [placement_view(p) for p in model.placements.select_related("node")]


def deployable_nodes(*, model: LocalModel) -> list[Node]:
    """Approved nodes ``model`` is not placed on (or is being removed from): the Deploy form's
    choices."""
    taken = Placement.objects.filter(model=model).exclude(status=PlacementStatus.REMOVING)
    return list(
        Node.objects.exclude(approved_at=None)
        .exclude(pk__in=taken.values("node_id"))
        .order_by("name")
    )


def _audit(
    *,
    action: str,
    model: LocalModel,
    node_name: str,
    actor: User | None,
    outcome: Outcome = Outcome.OK,
    detail: str = "",
) -> None:
    record(
        actor=actor,
        action=f"model.{action}",
        target=Target.of(model, type="model", label=model.name),
        outcome=outcome,
        detail=f"node {node_name}" + (f": {detail}" if detail else ""),
    )


def is_active(placement: Placement) -> bool:
    """Asked for and not given up: pending, under way or ready (not failed, not removing)."""
    return placement.status not in (PlacementStatus.FAILED, PlacementStatus.REMOVING)


def _is_connected(node: Node) -> bool:
    return bool(node.connected_via) and node.status != NodeStatus.OFFLINE


# ----------------------------------------------------------------------------- admins' verbs


def _require_fleet() -> None:
    if not settings.FLEET:
        raise PlacementRefused(
            f"This OpsDash runs in embedded mode: every ready model runs on this machine "
            f"({settings.NODE_NAME}), so there are no nodes to deploy to. Run a fleet hub "
            f"(OPSDASH_REDIS_URL and OPSDASH_DATABASE_URL) to place models on nodes.",
            code=Code.WRONG_STATUS,
        )


def _require_placeable(model: LocalModel, node: Node) -> None:
    if model.status != ModelStatus.READY:
        raise PlacementRefused(
            f"“{model.name}” is {model.status}; only a ready model can be deployed to a node.",
            code=Code.WRONG_STATUS,
        )
    held_by = (model.install_host or "").removeprefix(NODE_HOST_PREFIX)
    if model.install_host.startswith(NODE_HOST_PREFIX) and held_by != node.name:
        raise PlacementRefused(
            f"“{model.name}” was installed on node {held_by} from that node's own disk: its "
            f"file exists only there, so node {node.name} cannot fetch it from the hub. To run "
            f"it on other nodes, install the file on the hub instead.",
            code=Code.CONFLICT,
        )
    if not model.sha256 or not model.file_path or not Path(model.file_path).is_file():
        raise PlacementRefused(
            f"The file of “{model.name}” is missing on the hub ({model.file_path or 'no path'}), "
            f"so no node can fetch it. Install the file again.",
            code=Code.FILE_MISSING,
        )
    if node.approved_at is None:
        raise PlacementRefused(
            f"Node {node.name} is waiting for approval; approve it on the Nodes page (or POST "
            f"/api/nodes/{node.name}/approve) before deploying models to it.",
            code=Code.WRONG_STATUS,
        )


def place_model(*, model: LocalModel, node: Node, user: User | None) -> Placement:
    """Deploy ``model`` (ready, its file on the hub) to ``node`` (approved).

    A model already placed there (pending, under way or ready) is left as it is and its row
    returned (``is_active`` tells); a failed or removing one starts again. The node, if
    connected, is told now; otherwise when it reconnects. Refused (``PlacementRefused``, with a
    sentence) in embedded mode, for a model that is not ready or whose file is gone, and for a
    node not yet approved.
    """
    _require_fleet()
    with transaction.atomic():
        model = LocalModel.objects.select_for_update().get(pk=model.pk)
        node = Node.objects.select_for_update().get(pk=node.pk)
        _require_placeable(model, node)
        placement, created = Placement.objects.get_or_create(
            model=model, node=node, defaults={"created_by": user}
        )
        if not created and is_active(placement):
            return placement
        if not created:
            placement.status, placement.error, placement.bytes_done = PlacementStatus.PENDING, "", 0
            placement.created_by = user
            placement.save(update_fields=["status", "error", "bytes_done", "created_by"])
        _audit(action="place", model=model, node_name=node.name, actor=user)
        tell_node(node.name, protocol.PLACE, placement=placement_spec(model))
    return placement


def remove_placement(
    *, model: LocalModel, node: Node, user: User | None, reason: str = ""
) -> Placement | None:
    """Take ``model`` off ``node``. A connected node is told to delete its copy and the row
    stays ``removing`` (no longer routed to) until it confirms; for a node that is not
    connected the row goes now, since its next ``welcome`` no longer lists the model.

    Returns the row while it is being removed, ``None`` once it is gone. Raises
    ``PlacementRefused`` (404) when the model is not placed on the node.
    """
    with transaction.atomic():
        placement = (
            Placement.objects.select_for_update()
            .select_related("node", "model")
            .filter(model=model, node=node)
            .first()
        )
        if placement is None:
            raise PlacementRefused(
                f"“{model.name}” is not deployed to node {node.name}.", code=Code.NOT_FOUND
            )
        _audit(action="unplace", model=model, node_name=node.name, actor=user, detail=reason)
        if not _is_connected(placement.node):
            placement.delete()
            return None
        if placement.status != PlacementStatus.REMOVING:
            placement.status = PlacementStatus.REMOVING
            placement.save(update_fields=["status", "updated_at"])
        tell_node(node.name, protocol.UNPLACE, model_id=model.pk)
    return placement


def remove_model_placements(*, model_id: int) -> None:
    """The model is retired or deleted: take it off every node (a catalog after-retire hook)."""
    placements = Placement.objects.filter(model_id=model_id).select_related("model", "node")
    for placement in placements:
        remove_placement(
            model=placement.model, node=placement.node, user=None, reason="the model was retired"
        )


# ----------------------------------------------------------------------------- agents' reports


def record_placement(
    *, node: Node, model_id: object, status: str, error: str = "", bytes_done: object = 0
) -> Placement | None:
    """A node's progress on a placement job (its ``placement`` message).

    ``status`` is fetching, loading, ready or failed, or ``removed`` once it has deleted its
    copy (the row, if being removed, goes). Reports for a model the node is not asked to hold,
    unknown statuses and late progress on a row being removed are ignored: the agent gets the
    desired list again on its next ``welcome``. Becoming ready or failed is audited.
    """
    if not isinstance(model_id, int) or isinstance(model_id, bool):
        logger.warning("node %s reported a placement with model id %r", node.name, model_id)
        return None
    if status != REMOVED and status not in REPORTED:
        logger.warning("node %s reported placement status %r", node.name, status)
        return None
    with transaction.atomic():
        placement = (
            Placement.objects.select_for_update()
            .select_related("model")
            .filter(node=node, model_id=model_id)
            .first()
        )
        if placement is None:
            return None
        if placement.status == PlacementStatus.REMOVING or status == REMOVED:
            if placement.status == PlacementStatus.REMOVING and status == REMOVED:
                placement.delete()
                return None
            return placement  # late progress of a job being undone, or a stray "removed"
        before = placement.status
        placement.status = status
        placement.error = str(error)[:2000] if status == PlacementStatus.FAILED else ""
        if isinstance(bytes_done, int) and not isinstance(bytes_done, bool) and bytes_done >= 0:
            placement.bytes_done = bytes_done
        placement.save(update_fields=["status", "error", "bytes_done", "updated_at"])
        if status != before and status in (PlacementStatus.READY, PlacementStatus.FAILED):
            _audit(
                action="placement",
                model=placement.model,
                node_name=node.name,
                actor=None,
                outcome=Outcome.OK if status == PlacementStatus.READY else Outcome.FAILED,
                detail=status if status == PlacementStatus.READY else placement.error,
            )
    return placement
