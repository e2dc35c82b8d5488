"""The telemetry frame: what the sampler builds once per tick and every reader shares.

The websocket, ``/api/telemetry/snapshot``, ``/metrics``, the per-minute rollups and the alert
checks all read this one structure, so no two of them can disagree about a figure. Keys named
in DESIGN.md ("Shapes that scripts rely on") are stable; fields may be added, never renamed.

Units: ``*_bytes`` bytes, ``*_bytes_s`` bytes per second, ``*_total`` counters since boot,
``percent`` 0–100, ``temp`` °C, ``power`` W, ``energy`` J, ``*_clock`` MHz, ``t`` epoch ms.
GPU keys are short on purpose, and GPU UUIDs stay out (the log names them at start-up): eight
GPUs and 64 cores must fit in 6 KB per tick. (It was 4 KB until each GPU gained its health
figures, ECC, throttling, XIDs and processes, ~150 bytes a GPU in positional lists:
``probes/gpu_health.py``.)
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypedDict

# The probes' figures are the frame's parts; they are re-exported for the frame's readers.
from opsdash.telemetry.probes.figures import (  # noqa: F401
    GPU_OK,
    NO_DEVICES,
    NO_DRIVER,
    NO_LIBRARY,
    CpuFigures,
    DiskFigures,
    GpuFigures,
    GpuState,
    MemoryFigures,
    NetFigures,
    ProcessFigures,
)

GROUP = "telemetry"
"""The channel-layer group every sampler sends frames to and every consumer joins."""

FRAME_BUDGET_BYTES = 6144


class RunnerFigures(ProcessFigures):
    model: int
    name: str
    slug: str  # the ``model`` label of /metrics, the same as the run counters'
    gpu_mem_bytes: int | None  # None when NVML is not available
    queue: int  # requests running plus waiting
    state: str  # starting, idle, busy, stopping


class AlertFigures(TypedDict):
    kind: str
    subject: str
    since: int  # epoch ms
    message: str  # says the value and the threshold


class Frame(TypedDict):
    type: Literal["frame"]
    t: int
    host: str
    cpu: CpuFigures
    memory: MemoryFigures
    disk: DiskFigures
    net: NetFigures
    gpu_state: GpuState
    gpu_detail: str  # a sentence saying why there are no GPU figures; "" when ok
    gpus: list[GpuFigures]
    runners: list[RunnerFigures]
    server: ProcessFigures | None
    alerts: list[AlertFigures]


def encode(data: Any) -> str:
    """Compact JSON, the one serialization each frame gets."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def card(frame: Frame) -> dict[str, Any]:
    """The frame as a node's card of the fleet grid needs it: the light frame, plus which models
    are loaded and the node's ongoing alerts. A page gets this for every node but the one it
    shows in full: an 8-GPU node's frame is a few KB, its card a fraction of that."""
    runners = [{"name": r.get("name"), "slug": r.get("slug")} for r in frame.get("runners", [])]
    return lite(frame) | {"runners": runners, "alerts": frame.get("alerts", [])}


def lite(frame: Frame) -> dict[str, Any]:
    """The frame as history keeps it: every charted figure, without per-core, per-device and
    per-process detail (those only matter now, and would make a 15-minute history several MB).
    """
    cpu = {k: v for k, v in frame["cpu"].items() if k != "percent"}
    disk = {k: v for k, v in frame["disk"].items() if k != "devices"}
    net = {k: v for k, v in frame["net"].items() if k != "interfaces"}
    gpus = [
        {
            "index": g["index"],
            "util": g["util"],
            "mem_used": g["mem_used"],
            "mem_total": g["mem_total"],
            "temp": g["temp"],
            "power": g["power"],
        }
        for g in frame["gpus"]
    ]
    return {
        "type": "frame",
        "t": frame["t"],
        "host": frame["host"],
        "cpu": cpu,
        "memory": frame["memory"],
        "disk": disk,
        "net": net,
        "gpu_state": frame["gpu_state"],
        "gpus": gpus,
    }


def series_of(frame: Frame | dict[str, Any]) -> dict[str, float]:
    """The figures charted over time, flattened: what the per-minute rollups keep.

    ``static/js/telemetry.js`` (``seriesOf``) reads the same names from live frames.
    """
    memory = frame["memory"]
    out: dict[str, float] = {
        "cpu": frame["cpu"]["total"],
        "load1": frame["cpu"]["load"][0],
        "mem_used": memory["used_bytes"],
        "mem_percent": _percent(memory["used_bytes"], memory["total_bytes"]),
        "swap_used": memory["swap_used_bytes"],
        "disk_read": frame["disk"]["read_bytes_s"],
        "disk_write": frame["disk"]["write_bytes_s"],
        "net_rx": frame["net"]["rx_bytes_s"],
        "net_tx": frame["net"]["tx_bytes_s"],
    }
    free = frame["disk"].get("models_free_bytes")
    if free is not None:
        out["models_free"] = free
    for gpu in frame["gpus"]:
        i = gpu["index"]
        for key in ("util", "mem_used", "temp", "power"):
            value = gpu.get(key)
            if isinstance(value, int | float):
                out[f"gpu{i}_{key}"] = value
    return out


def _percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0
