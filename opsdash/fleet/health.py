"""Node health: the status a reader sees (``effective_status``), the sweep that records the
transitions (``sweep_node_health``), and the thread in each hub process that runs the sweep
every ``SWEEP_SECONDS``.

Every hub process sweeps, so the fleet's view does not depend on any one of them staying up;
the conditional updates in the sweep record each transition once however many sweep together.
A thread, not an asyncio task: the sweep is ORM work, which must stay off the event loop.

The thread runs only in fleet mode, and starts on first use by the agent link
(``services.register_node`` / ``authenticate_node``) or through
``opsdash.core.background.start_all()``; reads never wait for it, because they age statuses
themselves.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.fleet.models import Node, NodeStatus
from opsdash.notify import hooks as notify

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 2.0
#: Statuses of an approved node whose agent is heartbeating.
LIVE = (NodeStatus.HEALTHY, NodeStatus.DRAINING)


def node_target(name: str) -> Target:
    """Audit entries name a node by name, not pk: its history stays findable after it is
    deleted and enrolled again."""
    return Target(type="node", id=name, label=name)


@dataclass(frozen=True)
class Transition:
    """One status change the sweep recorded."""

    node: str
    old: str
    new: str


def _thresholds(now: datetime) -> tuple[datetime, datetime]:
    return (
        now - timedelta(seconds=settings.NODE_UNHEALTHY_SECONDS),
        now - timedelta(seconds=settings.NODE_OFFLINE_SECONDS),
    )


def effective_status(node: Node, *, now: datetime | None = None) -> str:
    """The status a reader should see: the recorded one, aged by ``last_seen`` exactly as the
    sweep would, so a read never shows a stale ``healthy`` between two sweeps."""
    if node.approved_at is None or node.status == NodeStatus.PENDING:
        return str(node.status)
    unhealthy_before, offline_before = _thresholds(now or timezone.now())
    last_seen = node.last_seen
    if node.status == NodeStatus.OFFLINE:
        return str(node.status)
    if last_seen is None or last_seen < offline_before:
        return NodeStatus.OFFLINE
    if node.status in LIVE and last_seen < unhealthy_before:
        return NodeStatus.UNHEALTHY
    return str(node.status)


def sweep_node_health(*, now: datetime | None = None) -> list[Transition]:
    """Move approved nodes whose heartbeat is overdue: ``healthy``/``draining`` →
    ``unhealthy`` after ``NODE_UNHEALTHY_SECONDS``, → ``offline`` after
    ``NODE_OFFLINE_SECONDS``. Each transition is audited once however many hub processes sweep
    at the same moment (the update matches only while the old status is still there)."""
    now = now or timezone.now()
    unhealthy_before, offline_before = _thresholds(now)
    transitions: list[Transition] = []
    stale = Node.objects.filter(
        approved_at__isnull=False,
        status__in=[*LIVE, NodeStatus.UNHEALTHY],
        last_seen__lt=unhealthy_before,
    ).values_list("pk", "name", "status", "last_seen")
    for pk, name, old, last_seen in list(stale):
        if last_seen is None:  # excluded by the filter; says so to the type checker
            continue
        new = NodeStatus.OFFLINE if last_seen < offline_before else NodeStatus.UNHEALTHY
        if new == old:
            continue
        with transaction.atomic():
            moved = Node.objects.filter(pk=pk, status=old, last_seen=last_seen).update(status=new)
            if not moved:
                continue
            seconds = int((now - last_seen).total_seconds())
            record(
                actor=None,
                action=f"node.{new}",
                target=node_target(name),
                detail={"from": old, "to": new, "silent_seconds": seconds},
            )
            if new == NodeStatus.OFFLINE:  # "node lost", once: only the sweep that moved it
                notify.emit_node_offline(name=name, last_seen=last_seen, silent_seconds=seconds)
        transitions.append(Transition(node=name, old=old, new=new))
    return transitions


_lock = threading.Lock()
_stop = threading.Event()
_thread: threading.Thread | None = None


def _run(stop: threading.Event) -> None:
    while not stop.wait(SWEEP_SECONDS):
        try:
            close_old_connections()
            for moved in sweep_node_health():
                logger.info("node %s: %s → %s", moved.node, moved.old, moved.new)
        except Exception:
            # A database restart or a lock must not end the sweep: the next round retries.
            logger.warning("the node health sweep failed; retrying", exc_info=True)
    connection.close()


def start_sweeper() -> None:
    """Start this process's sweep (idempotent; nothing in the embedded mode)."""
    global _thread, _stop
    if not settings.FLEET:
        return
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop = threading.Event()
        _thread = threading.Thread(
            target=_run, args=(_stop,), name="opsdash-fleet-sweep", daemon=True
        )
        _thread.start()


def stop_sweeper() -> None:
    global _thread
    with _lock:
        current, _thread = _thread, None
        _stop.set()
    if current is not None:
        current.join(timeout=SWEEP_SECONDS + 5)


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def reset_after_fork() -> None:
    """In a forked child: the parent's thread did not come along; start afresh on first use."""
    global _thread, _lock, _stop
    _thread, _lock, _stop = None, threading.Lock(), threading.Event()
