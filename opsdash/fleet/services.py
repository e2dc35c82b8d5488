"""Fleet verbs: node tokens, enrolling and identifying nodes, their health, and what admins do
to them. Pages, ``/api/nodes``, the agent link's consumer and management commands all call
these, so they cannot disagree about what a state means.

States (``NodeStatus``): ``pending`` until an admin approves; then ``healthy`` while heartbeats
arrive (``draining`` instead while an admin has drained it); ``unhealthy`` after
``NODE_UNHEALTHY_SECONDS`` without one and ``offline`` after ``NODE_OFFLINE_SECONDS``; the next
heartbeat brings it back. ``Node.draining`` is the admin's wish and survives a node going away.

Every transition is a conditional ``UPDATE … WHERE status = <old>`` inside the transaction that
audits it, so when two hub processes see the same stale node (or the same heartbeat) on
PostgreSQL only the one whose update matched records it: a transition is audited once.

Secrets are ``secrets.token_urlsafe(32)`` behind a prefix that says what they are (``odn_`` a
node token, ``odc_`` a node's credential), stored as sha256 hex and found by that hash.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.fleet import health, protocol
from opsdash.fleet.health import Transition as Transition
from opsdash.fleet.health import effective_status as effective_status
from opsdash.fleet.health import node_target
from opsdash.fleet.health import sweep_node_health as sweep_node_health
from opsdash.fleet.link import tell_node
from opsdash.fleet.listing import NodeView as NodeView
from opsdash.fleet.listing import get_node_view as get_node_view
from opsdash.fleet.listing import list_nodes as list_nodes
from opsdash.fleet.listing import local_node as local_node
from opsdash.fleet.listing import view_of as view_of
from opsdash.fleet.models import Node, NodeStatus, NodeToken, node_name_validator

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None

TOKEN_PREFIX = "odn_"
CREDENTIAL_PREFIX = "odc_"
#: Names a node may not take: they are paths of their own under /nodes/ and /api/nodes/.
RESERVED_NAMES = frozenset({"tokens"})
#: A heartbeat writes ``last_seen`` at most this often (heartbeats come every 2 s, and the
#: consumer may count each 1 s frame as one too); health is judged in tens of seconds.
LAST_SEEN_WRITE_SECONDS = 1.5


class NodeRefused(Refusal):
    """A node, a node token or an admin's action on a node was refused; ``reason`` says why."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token_target(token: NodeToken) -> Target:
    return Target(type="node_token", id=str(token.pk), label=token.name or token.prefix)


# --- node tokens ----------------------------------------------------------------------------


def create_node_token(*, name: str = "", user: Actor) -> tuple[NodeToken, str]:
    """A new enrollment token; the secret is returned once and only its hash is kept."""
    name = name.strip()[:120]
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = NodeToken.objects.create(
            name=name,
            secret_hash=_hash(secret),
            prefix=secret[:12],
            created_by=user if isinstance(user, User) else None,
        )
        record(actor=user, action="node_token.create", target=_token_target(token))
    return token, secret


def revoke_node_token(*, token: NodeToken, user: Actor) -> NodeToken:
    """No node can enroll with ``token`` any more; nodes it already enrolled keep their own
    credentials (delete a node to end its identity)."""
    with transaction.atomic():
        changed = NodeToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if not changed:
            raise NodeRefused(
                f"The node token “{token}” is already revoked.", code=Code.WRONG_STATUS
            )
        record(actor=user, action="node_token.revoke", target=_token_target(token))
    token.refresh_from_db()
    return token


def active_node_tokens() -> list[NodeToken]:
    return list(NodeToken.objects.select_related("created_by").filter(revoked_at__isnull=True))


# --- enrolling and identifying nodes --------------------------------------------------------


def _facts_fields(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """The node's static figures from a hello or heartbeat: ``cpu_count``,
    ``memory_total_bytes``, ``gpus`` (the frame's GPU entries); unknown keys are ignored."""
    if not facts:
        return {}
    fields: dict[str, Any] = {}
    for key in ("cpu_count", "memory_total_bytes"):
        value = facts.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            fields[key] = value
    gpus = facts.get("gpus")
    if isinstance(gpus, list):
        fields["gpus"] = gpus
    return fields


def _check_name(name: str) -> None:
    try:
        node_name_validator(name)
    except ValidationError:
        raise NodeRefused(
            f"“{name[:80]}” cannot be a node name: a node name is 1–63 letters, digits, dots, "
            "hyphens or underscores, starting with a letter or digit (`--name` or "
            "OPSDASH_NODE_NAME).",
            code=Code.INVALID_PARAM,
            param="name",
        ) from None
    if name in RESERVED_NAMES:
        raise NodeRefused(
            f"“{name}” is reserved; start the agent with another `--name`.",
            code=Code.INVALID_PARAM,
            param="name",
        )


def register_node(
    *,
    name: str,
    token_secret: str,
    facts: Mapping[str, Any] | None = None,
    version: str = "",
    address: str = "",
) -> tuple[Node, str]:
    """Enroll a new node with a node token: it is ``pending`` until an admin approves it.

    Returns the node and its credential, which the agent keeps and presents from then on
    (only its hash is stored). A name already enrolled is refused: a token holder must not be
    able to take over another node's identity; an admin deletes the old node first.
    """
    _check_name(name)
    token = NodeToken.objects.filter(secret_hash=_hash(token_secret or "")).first()
    if token is None:
        raise NodeRefused(
            "The hub does not know this node token: create one with `manage.py "
            "create_node_token` (or on the Nodes page) and start the agent with it.",
            code=Code.INVALID,
        )
    if token.revoked_at is not None:
        raise NodeRefused(
            f"The node token “{token}” was revoked; ask an admin for a new one.",
            code=Code.INVALID,
        )
    credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        if Node.objects.select_for_update().filter(name=name).exists():
            raise NodeRefused(
                f"A node named “{name}” is already enrolled. Start its agent with its saved "
                "credential, or have an admin delete that node first, or pick another `--name`.",
                code=Code.CONFLICT,
                param="name",
            )
        node = Node.objects.create(
            name=name,
            status=NodeStatus.PENDING,
            credential_hash=_hash(credential),
            enrolled_with=token,
            last_seen=now,
            version=version[:40],
            address=address[:64],
            **_facts_fields(facts),
        )
        NodeToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        record(
            actor=None,
            action="node.register",
            target=node_target(name),
            detail={
                key: value
                for key, value in (
                    ("token", token.prefix),
                    ("version", version[:40]),
                    ("address", address[:64]),
                )
                if value
            },
        )
    _start_sweeper()
    return node, credential


def authenticate_node(
    *,
    name: str,
    credential: str,
    facts: Mapping[str, Any] | None = None,
    version: str | None = None,
    address: str | None = None,
) -> Node:
    """The node ``name`` identified by its credential (an agent's hello after enrollment);
    the optional ``facts``, ``version`` and ``address`` refresh what the hub knows of it."""
    node = (
        Node.objects.filter(credential_hash=_hash(credential or "")).first() if credential else None
    )
    if node is None:
        raise NodeRefused(
            "The hub does not know this node's credential (was the node deleted?): remove the "
            "agent's saved credential and enroll it again with a node token.",
            code=Code.INVALID,
        )
    if node.name != name:
        raise NodeRefused(
            f"This credential belongs to the node “{node.name}”, not “{name[:80]}”: start the "
            f"agent with `--name {node.name}`, or enroll “{name[:80]}” with a node token.",
            code=Code.CONFLICT,
            param="name",
        )
    changes = _facts_fields(facts)
    if version is not None:
        changes["version"] = version[:40]
    if address is not None:
        changes["address"] = address[:64]
    changes = {key: value for key, value in changes.items() if getattr(node, key) != value}
    if changes:
        Node.objects.filter(pk=node.pk).update(**changes)
        for key, value in changes.items():
            setattr(node, key, value)
    _start_sweeper()
    return node


def authenticate_node_credential(*, credential: str) -> Node | None:
    """The approved node holding ``credential`` (a model file fetch's Bearer), else None: a
    pending node gets no files until an admin approves it."""
    if not credential or not credential.startswith(CREDENTIAL_PREFIX):
        return None
    return Node.objects.filter(credential_hash=_hash(credential), approved_at__isnull=False).first()


# --- heartbeats and health ------------------------------------------------------------------


def _live_status(node: Node) -> NodeStatus:
    return NodeStatus.DRAINING if node.draining else NodeStatus.HEALTHY


def record_heartbeat(
    *,
    node: Node,
    loaded: Sequence[Mapping[str, Any]] | None = None,
    queue_length: int | None = None,
    facts: Mapping[str, Any] | None = None,
    connected_via: str | None = None,
) -> Node:
    """A sign of life from ``node``'s agent: ``last_seen`` is written at most every
    ``LAST_SEEN_WRITE_SECONDS``, the other fields only when they changed, and an approved node
    that was ``unhealthy`` or ``offline`` becomes ``healthy`` (or ``draining``) again, audited.

    ``loaded`` is the agent's runners: ``[{"model": id, "name", "slug", "queue_length",
    "state"}]``. Updates ``node`` in place and returns it. Cheap: called every ~2 s per node.
    """
    now = timezone.now()
    changes: dict[str, Any] = {}
    if node.last_seen is None or (now - node.last_seen).total_seconds() >= LAST_SEEN_WRITE_SECONDS:
        changes["last_seen"] = now
    if loaded is not None and list(loaded) != node.loaded:
        changes["loaded"] = list(loaded)
    if queue_length is not None and queue_length != node.queue_length:
        changes["queue_length"] = max(0, int(queue_length))
    if connected_via is not None and connected_via != node.connected_via:
        changes["connected_via"] = connected_via[:200]
    changes.update(
        {key: value for key, value in _facts_fields(facts).items() if getattr(node, key) != value}
    )
    if "last_seen" not in changes:
        if changes:
            Node.objects.filter(pk=node.pk).update(**changes)
            for key, value in changes.items():
                setattr(node, key, value)
        return node
    # Every ~2 s: read what other processes may have changed (the sweep, an admin), so the
    # node's way back to healthy is seen even by a consumer holding an old copy of the row.
    row = Node.objects.filter(pk=node.pk).values_list("status", "draining", "approved_at").first()
    if row is None:
        raise NodeRefused(
            f"The node “{node.name}” was deleted by an admin: enroll it again with a node token.",
            code=Code.NOT_FOUND,
        )
    status, draining, approved_at = row
    node.status, node.draining, node.approved_at = status, draining, approved_at
    if approved_at is not None and status in (NodeStatus.UNHEALTHY, NodeStatus.OFFLINE):
        new = _live_status(node)
        with transaction.atomic():
            moved = Node.objects.filter(pk=node.pk, status=status).update(status=new, **changes)
            if moved:
                record(
                    actor=None,
                    action="node.healthy",
                    target=node_target(node.name),
                    detail={"from": status, "to": new},
                )
                node.status = new
            else:
                # Another process moved it first and recorded it; take its view.
                Node.objects.filter(pk=node.pk).update(**changes)
                node.status = Node.objects.values_list("status", flat=True).get(pk=node.pk)
    else:
        Node.objects.filter(pk=node.pk).update(**changes)
    for key, value in changes.items():
        setattr(node, key, value)
    return node


def mark_disconnected(*, node: Node, connected_via: str) -> None:
    """The socket held through ``connected_via`` closed. Only that connection's mark is cleared:
    the agent may already have reconnected through another hub process. Health follows from
    heartbeats (the sweep), not from the socket, so a network blip costs nothing."""
    Node.objects.filter(pk=node.pk, connected_via=connected_via).update(connected_via="")
    if node.connected_via == connected_via:
        node.connected_via = ""


def _start_sweeper() -> None:
    health.start_sweeper()


# --- what admins do -------------------------------------------------------------------------


def _require_fleet() -> None:
    if not settings.FLEET:
        raise NodeRefused(
            f"This OpsDash runs embedded: the local host “{settings.NODE_NAME}” is its only "
            "node, always serving. Run it as a hub (OPSDASH_DATABASE_URL and OPSDASH_REDIS_URL) "
            "to add, approve, drain or delete nodes.",
            code=Code.CONFLICT,
        )


def status_message(node: Node) -> dict[str, Any]:
    """What a node is told of its desired state (``status`` and the ``welcome``)."""
    return {
        "status": node.status,
        "approved": node.approved_at is not None,
        "draining": node.draining,
    }


def _locked(node: Node) -> Node:
    return Node.objects.select_for_update().get(pk=node.pk)


def _announce(current: Node, *, user: Actor, action: str, old: str) -> None:
    """Audit an admin's change to the locked row ``current`` and tell its node, inside the
    caller's transaction (the message leaves on commit)."""
    record(
        actor=user,
        action=action,
        target=node_target(current.name),
        detail={"from": old, "to": current.status},
    )
    tell_node(current.name, protocol.STATUS, **status_message(current))


def approve_node(*, node: Node, user: Actor) -> Node:
    """Let a pending node serve: it becomes ``healthy`` (or, if its agent has gone quiet since
    it registered, whatever its heartbeat's age says)."""
    _require_fleet()
    with transaction.atomic():
        current = _locked(node)
        if current.approved_at is not None:
            raise NodeRefused(
                f"The node “{node.name}” is already approved.", code=Code.WRONG_STATUS
            )
        current.approved_at = timezone.now()
        current.approved_by = user if isinstance(user, User) else None
        current.status = _live_status(current)
        current.status = effective_status(current)
        current.save(update_fields=["approved_at", "approved_by", "status"])
        _announce(current, user=user, action="node.approve", old=NodeStatus.PENDING)
    return current


def _set_draining(current: Node, *, user: Actor, draining: bool) -> Node:
    """Drain or resume the locked row ``current``: only a healthy node shows ``draining`` (an
    unhealthy or offline one keeps showing that, and the flag waits for its return)."""
    old = current.status
    current.draining = draining
    healthy, drained = NodeStatus.HEALTHY, NodeStatus.DRAINING
    if current.status == (healthy if draining else drained):
        current.status = drained if draining else healthy
    current.save(update_fields=["draining", "status"])
    _announce(current, user=user, action="node.drain" if draining else "node.resume", old=old)
    return current


def drain_node(*, node: Node, user: Actor) -> Node:
    """The node finishes what it has and takes nothing new, until resumed."""
    _require_fleet()
    with transaction.atomic():
        current = _locked(node)
        if current.approved_at is None:
            raise NodeRefused(
                f"The node “{node.name}” is still pending: approve it before draining it.",
                code=Code.WRONG_STATUS,
            )
        if current.draining:
            raise NodeRefused(
                f"The node “{node.name}” is already draining.", code=Code.WRONG_STATUS
            )
        return _set_draining(current, user=user, draining=True)


def resume_node(*, node: Node, user: Actor) -> Node:
    """A drained node takes new requests again."""
    _require_fleet()
    with transaction.atomic():
        current = _locked(node)
        if not current.draining:
            raise NodeRefused(
                f"The node “{node.name}” is not draining, so there is nothing to resume.",
                code=Code.WRONG_STATUS,
            )
        return _set_draining(current, user=user, draining=False)


def delete_node(*, node: Node, user: Actor) -> None:
    """Remove a node that is offline or still pending, with its placements; its credential
    goes with the row, so its agent is refused from then on. Its runs keep its name."""
    _require_fleet()
    with transaction.atomic():
        current = _locked(node)
        status = effective_status(current)
        if status not in (NodeStatus.OFFLINE, NodeStatus.PENDING):
            raise NodeRefused(
                f"The node “{node.name}” is {status}: only an offline or pending node can be "
                "deleted. Drain it and stop its agent, then delete it once it shows offline "
                f"(after {settings.NODE_OFFLINE_SECONDS} s without a heartbeat).",
                code=Code.WRONG_STATUS,
            )
        placements = list(current.placements.values_list("model_id", flat=True))
        current.delete()
        record(
            actor=user,
            action="node.delete",
            target=node_target(node.name),
            detail={"status": status, "placements": placements},
        )
        tell_node(node.name, protocol.STATUS, status="deleted", approved=False, draining=False)


def node_for_admin(*, name: str) -> Node:
    """The node row an admin acts on; a refusal with a sentence when there is none."""
    _require_fleet()
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise NodeRefused(f"There is no node named “{name[:80]}”.", code=Code.NOT_FOUND)
    return node
