"""/api/models: the catalog's JSON API (same services as the pages).

No ``from __future__ import annotations`` here: django-ninja reads the annotations at import
time to build request and response schemas.
"""

from datetime import datetime
from typing import Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, DbId, responses
from opsdash.catalog import hooks, services
from opsdash.catalog.models import LocalModel, SourceKind
from opsdash.typing import AuthedRequest

router = Router(tags=["models"])


class ModelOut(Schema):
    id: int
    name: str
    slug: str
    status: str
    error: str
    stage: str
    progress_percent: int | None
    bytes_done: int
    bytes_total: int | None
    format: str
    architecture: str
    model_type: str
    parameter_count: int | None
    quantization: str
    context_length: int | None
    vocab_size: int | None
    size_bytes: int | None
    sha256: str
    backend: str
    source_kind: str
    source_ref: str
    created_at: datetime
    installed_at: datetime | None
    retired_at: datetime | None
    deleted_at: datetime | None


class PlacementOut(Schema):
    node: str
    status: str
    error: str


class ModelDetailOut(ModelOut):
    """One model, with where it runs: in a fleet each node it is placed on; embedded, this
    machine (the fleet app answers, through ``hooks.placements_of``)."""

    placements: list[PlacementOut]

    @staticmethod
    def resolve_placements(obj: LocalModel) -> list[object]:
        return hooks.model_placements(model=obj)


class ModelList(Schema):
    items: list[ModelOut]
    count: int


class InstallIn(Schema):
    source: Literal["path", "url"]
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    name: str | None = None
    model_type: str | None = None
    #: Fleet mode: install on this node, the path (or URL) resolved there; embedded: a 400.
    node: str | None = None


def model_json(model: LocalModel) -> dict[str, object]:
    """The stable model shape, for endpoints outside this router (the upload view)."""
    return ModelOut.from_orm(model).dict()


@router.get("", response=responses({200: ModelList}, 422), auth=api_auth(Cap.VIEW_MODELS))
def list_models(request: HttpRequest, status: str | None = None) -> dict[str, object]:
    models = LocalModel.objects.all()
    if status:
        models = models.filter(status=status)
    items = list(models)
    return {"items": items, "count": len(items)}


@router.post(
    "",
    response=responses({202: ModelOut}, *BODY_STATUSES, 409),
    auth=api_auth(Cap.MANAGE_MODELS),
)
def install(request: AuthedRequest, payload: InstallIn) -> Status:
    location = payload.path if payload.source == "path" else payload.url
    if not location:
        return Status(400, {"detail": f"Give the {payload.source} to install from."})
    source = services.InstallSource(
        kind=SourceKind(payload.source),
        location=location,
        expected_sha256=payload.sha256 or "",
        name=payload.name or "",
        model_type=payload.model_type or "",
    )
    try:
        if payload.node is not None:
            model = hooks.install_on_node(source=source, node=payload.node, user=request.user)
        else:
            model = services.start_install(source=source, user=request.user)
    except services.InstallRefused as exc:
        return Status(exc.status, {"detail": exc.reason})
    return Status(202, model)


# Path ids are DbId: a 20-digit id would otherwise reach the database and fail there (a 500).
LIFECYCLE = responses({200: ModelOut}, 404, 409, 422)


@router.get(
    "/{model_id}",
    response=responses({200: ModelDetailOut}, 404, 422),
    auth=api_auth(Cap.VIEW_MODELS),
)
def get_model(request: HttpRequest, model_id: DbId) -> LocalModel:
    return get_object_or_404(LocalModel, pk=model_id)


def _lifecycle(request: AuthedRequest, model_id: int, verb: str) -> LocalModel:
    model = get_object_or_404(LocalModel, pk=model_id)
    action = {
        "retire": services.retire_model,
        "restore": services.restore_model,
        "delete": services.delete_model,
        "cancel": services.cancel_install,
    }[verb]
    # A LifecycleError answers its code's status (409) through the API's handler.
    return action(model=model, user=request.user)


@router.post("/{model_id}/retire", response=LIFECYCLE, auth=api_auth(Cap.MANAGE_MODELS))
def retire(request: AuthedRequest, model_id: DbId) -> LocalModel:
    return _lifecycle(request, model_id, "retire")


@router.post("/{model_id}/restore", response=LIFECYCLE, auth=api_auth(Cap.MANAGE_MODELS))
def restore(request: AuthedRequest, model_id: DbId) -> LocalModel:
    return _lifecycle(request, model_id, "restore")


@router.delete("/{model_id}", response=LIFECYCLE, auth=api_auth(Cap.MANAGE_MODELS))
def delete(request: AuthedRequest, model_id: DbId) -> LocalModel:
    return _lifecycle(request, model_id, "delete")


@router.post("/{model_id}/cancel", response=LIFECYCLE, auth=api_auth(Cap.MANAGE_MODELS))
def cancel(request: AuthedRequest, model_id: DbId) -> LocalModel:
    """Cancel an install: the model ends ``failed``, "Cancelled by <you>."; 409 if it is not
    installing."""
    return _lifecycle(request, model_id, "cancel")
