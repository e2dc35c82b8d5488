"""Nodes' telemetry as a hub receives it, for the fleet telemetry tests: real samplers (with the
fake NVML, the one thing this machine lacks), one real frame given any node's name, and a way
to feed frames from inside a forked live server."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from opsdash.telemetry.sampler import Sampler
from tests.telemetry.fake_nvml import FakeNvml

_frame: dict[str, Any] = {}


def node_sampler(host: str, *, nvml: FakeNvml | None = None) -> Sampler:
    """A node's sampler as its agent runs it: not persisting, no runners, ``nvml`` (one fake
    GPU unless given)."""
    return Sampler(
        tick_seconds=1.0,
        host=host,
        models_dir=Path("."),
        nvml=nvml if nvml is not None else FakeNvml(gpus=1),
        runners=lambda: [],
        persist=False,
    )


def node_frame(host: str, t: int | None = None, **changes: Any) -> dict[str, Any]:
    """A real frame (a sampler's second tick: with rates and the process table, taken once per
    process) as node ``host``'s at ``t`` (epoch ms; now if None), with ``changes`` applied."""
    if not _frame:
        sampler = node_sampler("agent")
        sampler.tick()
        _frame.update(sampler.tick())
    frame = copy.deepcopy(_frame)
    frame.update({"host": host, "t": int(time.time() * 1000) if t is None else t, **changes})
    return frame


def run_after_startup(task: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """In a forked live server (``tests.liveserver.serve``'s setup): start ``task`` on uvicorn's
    loop once the app's lifespan startup has run."""
    import opsdash.asgi

    startup = opsdash.asgi.lifespan_startup

    async def lifespan_startup() -> None:
        await startup()
        asyncio.get_running_loop().create_task(task())

    opsdash.asgi.lifespan_startup = lifespan_startup
