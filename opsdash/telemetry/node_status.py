"""Where the telemetry page learns each node's recorded status, without importing the fleet.

A hub's fleet app registers a source in its ``AppConfig.ready()``: a callable answering
``{node name: status}`` with the status the Nodes page shows (``pending``, ``healthy``,
``unhealthy``, ``offline``, ``draining``). The telemetry node cards show it rather than
guessing from the frames' age, and list the nodes that send no frame (an offline or pending
node) too. No source registered (or the embedded mode): the frames' age decides, as before.

Error policy: a source that raises is logged and skipped; the cards fall back to the frames'
age, so a database hiccup never takes the telemetry page down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from opsdash.core.registry import Registry

logger = logging.getLogger(__name__)

#: The statuses a node card can show.
STATUSES = ("pending", "healthy", "unhealthy", "offline", "draining")


class StatusSource(Protocol):
    """Every known node's recorded status, by node name."""

    def __call__(self) -> Mapping[str, str]: ...


status_sources: Registry[StatusSource] = Registry("node status sources")


def recorded_statuses() -> dict[str, str]:
    """Every registered source's answer, joined (a later source wins for the same node)."""
    joined: dict[str, str] = {}
    for source in status_sources.entries():
        try:
            joined.update(source())
        except Exception:
            logger.exception("node status source %r failed; cards use the frames' age", source)
    return joined
