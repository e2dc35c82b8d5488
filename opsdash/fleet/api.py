"""/api/nodes: the fleet's nodes and node tokens (same services as the Nodes pages).

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.

Operators and admins read nodes; only admins approve, drain, resume and delete them and manage
node tokens. In the embedded mode the list is the one local node, and every change answers 409
with a sentence saying why.
"""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, DbId, responses
from opsdash.fleet import services
from opsdash.fleet.models import NodeToken
from opsdash.typing import AuthedRequest

router = Router(tags=["nodes"])


class NodeOut(Schema):
    name: str
    status: str
    last_seen: datetime | None
    version: str
    cpu_count: int | None
    memory_total_bytes: int | None
    gpus: list[dict[str, Any]]
    loaded: list[dict[str, Any]]
    queue_length: int
    draining: bool
    approved_at: datetime | None
    address: str
    connected: bool


class NodeList(Schema):
    items: list[NodeOut]
    count: int


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class TokenList(Schema):
    items: list[TokenOut]
    count: int


class NewTokenOut(TokenOut):
    secret: str


class TokenIn(Schema):
    name: str = ""


def _token_json(token: NodeToken) -> dict[str, Any]:
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "created_by": token.created_by.get_username() if token.created_by else None,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
        "active": token.revoked_at is None,
    }


@router.get("", response=responses({200: NodeList}), auth=api_auth(Cap.VIEW_NODES))
def list_nodes(request: HttpRequest) -> dict[str, Any]:
    """Every node with its status aged by its last heartbeat; the local host alone when
    embedded."""
    items = [node.as_json() for node in services.list_nodes()]
    return {"items": items, "count": len(items)}


# Node tokens come before /{name}: "tokens" is a reserved node name (services.RESERVED_NAMES).
@router.get("/tokens", response=responses({200: TokenList}), auth=api_auth(Cap.MANAGE_NODES))
def list_tokens(request: HttpRequest) -> dict[str, Any]:
    """Every node token, newest first, revoked ones too (their secrets are never shown)."""
    tokens = [_token_json(t) for t in NodeToken.objects.select_related("created_by")]
    return {"items": tokens, "count": len(tokens)}


@router.post(
    "/tokens",
    response=responses({201: NewTokenOut}, *BODY_STATUSES),
    auth=api_auth(Cap.MANAGE_NODES),
)
def create_token(request: AuthedRequest, payload: TokenIn) -> Status:
    """A new node token; ``secret`` is in this answer only (``manage.py agent --token``)."""
    token, secret = services.create_node_token(name=payload.name, user=request.user)
    return Status(201, {**_token_json(token), "secret": secret})


@router.delete(
    "/tokens/{token_id}",
    response=responses({200: TokenOut}, 404, 409, 422),
    auth=api_auth(Cap.MANAGE_NODES),
)
def revoke_token(request: AuthedRequest, token_id: DbId) -> Status:
    """Revoke a node token: no node enrolls with it any more (enrolled nodes keep theirs)."""
    token = NodeToken.objects.select_related("created_by").filter(pk=token_id).first()
    if token is None:
        return Status(404, {"detail": f"There is no node token {token_id}."})
    token = services.revoke_node_token(token=token, user=request.user)
    return Status(200, _token_json(token))


@router.get("/{name}", response=responses({200: NodeOut}, 404), auth=api_auth(Cap.VIEW_NODES))
def get_node(request: HttpRequest, name: str) -> Status:
    view = services.get_node_view(name=name)
    if view is None:
        return Status(404, {"detail": f"There is no node named “{name[:80]}”."})
    return Status(200, view.as_json())


ACTION = responses({200: NodeOut}, 404, 409)


def _act(request: AuthedRequest, name: str, verb: str) -> Status:
    action = {
        "approve": services.approve_node,
        "drain": services.drain_node,
        "resume": services.resume_node,
    }[verb]
    # A NodeRefused answers its code's status (404, 409) through the API's handler.
    node = action(node=services.node_for_admin(name=name), user=request.user)
    return Status(200, services.view_of(node).as_json())


@router.post("/{name}/approve", response=ACTION, auth=api_auth(Cap.MANAGE_NODES))
def approve(request: AuthedRequest, name: str) -> Status:
    """A pending node may serve: it becomes healthy while its heartbeats arrive."""
    return _act(request, name, "approve")


@router.post("/{name}/drain", response=ACTION, auth=api_auth(Cap.MANAGE_NODES))
def drain(request: AuthedRequest, name: str) -> Status:
    """The node finishes what it has and is sent nothing new until resumed."""
    return _act(request, name, "drain")


@router.post("/{name}/resume", response=ACTION, auth=api_auth(Cap.MANAGE_NODES))
def resume(request: AuthedRequest, name: str) -> Status:
    return _act(request, name, "resume")


@router.delete(
    "/{name}", response=responses({204: None}, 404, 409), auth=api_auth(Cap.MANAGE_NODES)
)
def delete(request: AuthedRequest, name: str) -> Status:
    """Remove an offline or pending node and its identity (its agent is refused from then on);
    its runs keep its name."""
    services.delete_node(node=services.node_for_admin(name=name), user=request.user)
    return Status(204, None)
