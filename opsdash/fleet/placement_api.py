"""/api/models/{id}/placements: deploy a model to a node, take it off one (same services as the
model page). Mounted beside the catalog's router under /api/models.

No ``from __future__ import annotations`` here: django-ninja reads the annotations at import
time to build request and response schemas.
"""

from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, DbId, responses
from opsdash.catalog.models import LocalModel
from opsdash.core.errors import Code
from opsdash.fleet import placements
from opsdash.fleet.models import Node, Placement
from opsdash.typing import AuthedRequest

router = Router(tags=["placements"])


class PlacementOut(Schema):
    node: str
    status: str
    error: str
    bytes_done: int


class PlaceIn(Schema):
    node: str = Field(min_length=1, max_length=63)


def _node(name: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise placements.PlacementRefused(
            f"There is no node named {name[:63]!r}; GET /api/nodes lists them.",
            code=Code.NOT_FOUND,
        )
    return node


def _model(model_id: int) -> LocalModel:
    return get_object_or_404(LocalModel, pk=model_id)


@router.post(
    "/{model_id}/placements",
    response=responses({200: PlacementOut, 202: PlacementOut}, *BODY_STATUSES, 404, 409),
    auth=api_auth(Cap.MANAGE_MODELS),
)
def place(request: AuthedRequest, model_id: DbId, payload: PlaceIn) -> Status:
    """Deploy the model to ``node``: 202 with the new placement (the node fetches the file from
    the hub and trial-loads it; poll ``GET /api/models/{id}``), 200 with the existing one when
    it is already placed there, 409 with a sentence when it cannot be."""
    model, node = _model(model_id), _node(payload.node)
    before = Placement.objects.filter(model=model, node=node).first()
    placement = placements.place_model(model=model, node=node, user=request.user)
    already = before is not None and placements.is_active(before)
    return Status(200 if already else 202, placements.placement_view(placement))


@router.delete(
    "/{model_id}/placements/{node}",
    response=responses({202: PlacementOut, 204: None}, 404, 422),
    auth=api_auth(Cap.MANAGE_MODELS),
)
def unplace(request: AuthedRequest, model_id: DbId, node: str) -> Status:
    """Take the model off ``node``: 202 while the connected node deletes its copy (status
    ``removing``), 204 once the placement is gone (a node that is not connected drops its copy
    when it reconnects)."""
    model, found = _model(model_id), _node(node)
    placement = placements.remove_placement(model=model, node=found, user=request.user)
    if placement is None:
        return Status(204, None)
    return Status(202, placements.placement_view(placement))
