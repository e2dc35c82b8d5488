"""The fleet's answer to the telemetry page's question "what is each node's status?"
(``opsdash.telemetry.node_status``, registered in ``FleetConfig.ready()``)."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from opsdash.fleet.health import effective_status
from opsdash.fleet.models import Node


def node_statuses() -> dict[str, str]:
    """Every enrolled node's status as the Nodes page shows it (aged by its last heartbeat);
    nothing in the embedded mode, where the local host is the one, healthy, node."""
    if not settings.FLEET:
        return {}
    now = timezone.now()
    # Only the columns the status needs: the telemetry page asks every few seconds.
    nodes = Node.objects.only("name", "status", "approved_at", "last_seen")
    return {node.name: effective_status(node, now=now) for node in nodes}
