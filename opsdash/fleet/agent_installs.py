"""The hub's side of installs a fleet node runs (``POST /api/models`` with ``"node"``).

``install_on_node`` validates what it can without the file (the sha256's shape, the URL, the
model type, a duplicate of a known sha256), creates the ``installing`` record (its host
``node:<name>``, so no hub process's recovery fails it as its own) and a ``fetching``
placement for the node, and sends the node an ``install`` message; the node resolves the path
inside its own model roots and runs the install pipeline (``agent_install``). Its
``installed`` report (``record_installed``, from the consumer) makes the model ready with the
node's metadata, or failed with its sentence, and the placement with it.

The file of such a model exists only on that node (the hub keeps no ``file_path``): deploying
it to another node is refused with a sentence (``placements._require_placeable``).
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from inference.formats.metadata import ModelMetadata
from opsdash.catalog import hooks, install
from opsdash.catalog.errors import InstallRefused
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core.errors import Code
from opsdash.fleet import health, placements, protocol
from opsdash.fleet.link import tell_node
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _require_node(name: str) -> Node:
    if not settings.FLEET:
        raise InstallRefused(
            f"“node” is for fleet mode: this OpsDash runs embedded, so models install on this "
            f"machine ({settings.NODE_NAME}); leave “node” out.",
            code=Code.INVALID,
        )
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise InstallRefused(
            f"There is no node named {name[:63]!r} to install on; GET /api/nodes lists them.",
            code=Code.CONFLICT,
        )
    if node.approved_at is None:
        raise InstallRefused(
            f"Node {node.name} is waiting for approval; approve it on the Nodes page before "
            f"installing models on it.",
            code=Code.CONFLICT,
        )
    status = health.effective_status(node)
    if status == NodeStatus.OFFLINE or not node.connected_via:
        raise InstallRefused(
            f"Node {node.name} is {status if status != NodeStatus.HEALTHY else 'not connected'}: "
            f"its agent must be running and linked to the hub to install a file from its disk.",
            code=Code.CONFLICT,
        )
    return node


def install_on_node(*, source: install.InstallSource, node: str, user: User | None) -> LocalModel:
    """Start installing ``source`` on fleet node ``node`` (the catalog's node-install hook).
    ``InstallRefused``: 400 in embedded mode or for a bad source, 409 for a node that is
    unknown, waiting for approval or not connected, or a file already installed."""
    found = _require_node(node)
    with transaction.atomic():
        model = install.new_install_record(source=source, user=user, on_node=found.name)
        Placement.objects.create(
            model=model, node=found, status=PlacementStatus.FETCHING, created_by=user
        )
        key = "path" if source.kind == SourceKind.PATH else "url"
        tell_node(
            found.name,
            protocol.INSTALL,
            model_id=model.pk,
            source=str(source.kind),
            sha256=model.expected_sha256,
            name=model.name,
            slug=model.slug,
            model_type=model.model_type,
            **{key: model.source_ref},
        )
    return model


def installed_on(model: LocalModel) -> str:
    """The node whose own disk ``model`` was installed from ("" for a file on the hub)."""
    host = model.install_host or ""
    prefix = install.NODE_HOST_PREFIX
    return host.removeprefix(prefix) if host.startswith(prefix) else ""


def record_installed(
    *, node: Node, model_id: object, status: str, error: str, metadata: object
) -> LocalModel | None:
    """Node ``node``'s ``installed`` report: the model ready with the node's metadata (its
    placement ready), or failed with the node's sentence. Reports for a model this node is not
    installing are ignored."""
    if not isinstance(model_id, int) or isinstance(model_id, bool):
        return None
    model = LocalModel.objects.filter(
        pk=model_id,
        status=ModelStatus.INSTALLING,
        install_host=f"{install.NODE_HOST_PREFIX}{node.name}",
    ).first()
    if model is None:
        logger.info("node %s reported install %r, which it is not running", node.name, model_id)
        return None
    if status != "ready":
        reason = error or f"The install failed on node {node.name} without a reason."
        _fail(model, node, reason)
        return model
    try:
        data = dict(metadata) if isinstance(metadata, dict) else {}
        sha256, size = str(data["sha256"]), int(data["size_bytes"])
        if not _SHA256.fullmatch(sha256) or size < 0:
            raise ValueError(sha256)
        inspected = install.Inspected(
            metadata=ModelMetadata.from_dict(data),
            backend=str(data["backend"]),
            backend_reason=str(data.get("backend_reason") or ""),
            trial_seconds=data.get("trial_seconds"),
            trial_sample=str(data.get("trial_sample") or ""),
        )
    except (KeyError, TypeError, ValueError):
        _fail(model, node, f"Node {node.name} reported the install without its file's details.")
        return model
    try:
        install.claim_sha256(model.pk, sha256)
    except InstallRefused as exc:
        _fail(model, node, exc.reason)
        return model
    if install.mark_ready(
        model.pk, file_path="", size=size, sha256=sha256, inspected=inspected, where=node.name
    ):
        placements.record_placement(
            node=node, model_id=model.pk, status=PlacementStatus.READY, bytes_done=size
        )
        hooks.run_after_install(model_id=model.pk)
    model.refresh_from_db()
    return model


def _fail(model: LocalModel, node: Node, reason: str) -> None:
    install.fail_install(model.pk, reason)
    placements.record_placement(
        node=node, model_id=model.pk, status=PlacementStatus.FAILED, error=reason
    )
    # Whatever the node kept of it goes (its next welcome no longer lists the model either).
    tell_node(node.name, protocol.UNPLACE, model_id=model.pk)
