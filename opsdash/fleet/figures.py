"""A node's live figures for the Nodes pages: CPU and memory use, GPU utilization and memory,
from its latest telemetry frame (the local sampler's in the embedded mode, this hub process's
fleet store otherwise), with what the agent reported as a fallback before the first frame.

Kept apart from ``services`` because it reads telemetry, which itself reads the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from opsdash.fleet.services import NodeView


@dataclass(frozen=True)
class NodeFigures:
    view: NodeView
    has_frame: bool
    cpu_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    gpu_count: int
    gpu_util: int | None  # mean over the node's GPUs
    gpu_mem_used_bytes: int | None
    gpu_mem_total_bytes: int | None
    gpus: list[Mapping[str, Any]]

    @property
    def cpu_whole_percent(self) -> int | None:
        return None if self.cpu_percent is None else round(self.cpu_percent)

    @property
    def memory_percent(self) -> int | None:
        if not self.memory_used_bytes or not self.memory_total_bytes:
            return None
        return round(100 * self.memory_used_bytes / self.memory_total_bytes)

    @property
    def gpu_mem_percent(self) -> int | None:
        if self.gpu_mem_used_bytes is None or not self.gpu_mem_total_bytes:
            return None
        return round(100 * self.gpu_mem_used_bytes / self.gpu_mem_total_bytes)


def latest_frame(view: NodeView) -> Mapping[str, Any] | None:
    if view.frame is not None or view.embedded:
        return view.frame
    from opsdash.telemetry.store import get_store

    frame: Mapping[str, Any] | None = get_store().latest(view.name)
    return frame


def _sum(values: list[Any]) -> int | None:
    known = [v for v in values if isinstance(v, int | float)]
    return int(sum(known)) if known else None


def figures_of(view: NodeView) -> NodeFigures:
    frame = latest_frame(view)
    gpus: list[Mapping[str, Any]] = list(frame["gpus"]) if frame else list(view.gpus)
    utils: list[float] = [g["util"] for g in gpus if isinstance(g.get("util"), int | float)]
    memory = frame["memory"] if frame else {}
    return NodeFigures(
        view=view,
        has_frame=frame is not None,
        cpu_percent=frame["cpu"]["total"] if frame else None,
        memory_used_bytes=memory.get("used_bytes"),
        memory_total_bytes=memory.get("total_bytes") or view.memory_total_bytes,
        gpu_count=len(gpus),
        gpu_util=round(sum(utils) / len(utils)) if utils else None,
        gpu_mem_used_bytes=_sum([g.get("mem_used") for g in gpus]),
        gpu_mem_total_bytes=_sum([g.get("mem_total") for g in gpus]),
        gpus=gpus,
    )


def telemetry_host(view: NodeView) -> str:
    """The ``host`` the node's frames carry: its name, or the embedded sampler's host."""
    return str(settings.TELEMETRY_HOST) if view.embedded else view.name
