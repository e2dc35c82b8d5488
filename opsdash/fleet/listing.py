"""Reading nodes: what pages and ``/api/nodes`` show of each (``NodeView``).

In the embedded mode the local host is the one node (no database row), with the local
sampler's figures and the local supervisor's runners; in fleet mode the enrolled nodes, each
with its status aged by its last heartbeat, so a read never shows a stale ``healthy``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from opsdash.fleet.health import effective_status
from opsdash.fleet.models import Node, NodeStatus


@dataclass(frozen=True)
class NodeView:
    """A node as pages and ``/api/nodes`` show it. In the embedded mode the local host is the
    one node (``embedded`` true, no database row); ``frame`` is its latest telemetry frame when
    one is at hand (the local sampler's; in fleet mode the caller may add the hub's)."""

    name: str
    status: str
    last_seen: datetime | None
    version: str
    cpu_count: int | None
    memory_total_bytes: int | None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    loaded: list[dict[str, Any]] = field(default_factory=list)
    queue_length: int = 0
    draining: bool = False
    approved_at: datetime | None = None
    address: str = ""
    connected: bool = False
    embedded: bool = False
    frame: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The stable node shape (DESIGN.md) plus fleet fields."""
        return {
            "name": self.name,
            "status": self.status,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "version": self.version,
            "cpu_count": self.cpu_count,
            "memory_total_bytes": self.memory_total_bytes,
            "gpus": self.gpus,
            "loaded": self.loaded,
            "queue_length": self.queue_length,
            "draining": self.draining,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "address": self.address,
            "connected": self.connected,
        }


def view_of(node: Node, *, now: datetime | None = None) -> NodeView:
    return NodeView(
        name=node.name,
        status=effective_status(node, now=now),
        last_seen=node.last_seen,
        version=node.version,
        cpu_count=node.cpu_count,
        memory_total_bytes=node.memory_total_bytes,
        gpus=list(node.gpus or []),
        loaded=list(node.loaded or []),
        queue_length=node.queue_length,
        draining=node.draining,
        approved_at=node.approved_at,
        address=node.address,
        connected=bool(node.connected_via),
    )


def local_node() -> NodeView:
    """The embedded mode's one node: this host, with the local sampler's latest figures (or,
    before its first frame, what the OS says) and the local supervisor's runners."""
    import psutil

    from opsdash.runs.runtime import loaded_runners
    from opsdash.telemetry.sampler import current_sampler, get_sampler

    sampler = get_sampler() if settings.TELEMETRY_EMBEDDED else current_sampler()
    frame: Mapping[str, Any] | None = sampler.latest() if sampler is not None else None
    runners = loaded_runners()
    loaded = [
        {
            "model": r.model_id,
            "name": r.name,
            "slug": r.slug,
            "pid": r.pid,
            "rss_bytes": r.rss_bytes,
            "queue_length": r.queue_length,
            "state": r.state,
        }
        for r in runners
    ]
    if frame is not None:
        cpu_count = frame["cpu"].get("count") or len(frame["cpu"]["percent"])
        memory_total = frame["memory"]["total_bytes"]
        gpus = list(frame["gpus"])
    else:
        cpu_count, memory_total, gpus = os.cpu_count(), psutil.virtual_memory().total, []
    return NodeView(
        name=str(settings.NODE_NAME),
        status=NodeStatus.HEALTHY,
        last_seen=timezone.now(),
        version=_version(),
        cpu_count=cpu_count,
        memory_total_bytes=memory_total,
        gpus=gpus,
        loaded=loaded,
        queue_length=sum(r.queue_length for r in runners),
        approved_at=None,
        connected=True,
        embedded=True,
        frame=frame,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opsdash")
    except PackageNotFoundError:
        return ""


def list_nodes() -> list[NodeView]:
    """Every node, by name: in the embedded mode exactly one, the local host; in fleet mode the
    enrolled nodes, each with its status aged by its last heartbeat (``effective_status``)."""
    if not settings.FLEET:
        return [local_node()]
    now = timezone.now()
    return [view_of(node, now=now) for node in Node.objects.all()]


def get_node_view(*, name: str) -> NodeView | None:
    """One node by name, or None."""
    if not settings.FLEET:
        local = local_node()
        return local if local.name == name else None
    node = Node.objects.filter(name=name).first()
    return view_of(node) if node is not None else None
