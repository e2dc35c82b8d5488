"""A fresh sampler per test, ticking fast; helpers to open the telemetry websocket."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from opsdash.runs.runtime import LoadedRunner
from opsdash.telemetry import sampler as sampler_module
from tests.fixtures.websockets import ws_as


@pytest.fixture(autouse=True)
def fresh_sampler(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """No sampler from an earlier test; 10 ticks a second; stopped afterwards."""
    sampler_module.stop_sampler()
    sampler_module.starts = 0
    settings.TELEMETRY_TICK_MS = 100
    settings.TELEMETRY_STALL_SECONDS = 10
    settings.TELEMETRY_EMBEDDED = True
    settings.TELEMETRY_HOST = "testhost"
    yield
    sampler_module.stop_sampler()


async def telemetry_socket(user: User | None) -> WebsocketCommunicator:
    return await ws_as(user, "/ws/telemetry/")


class ManyCores:
    """psutil, except that it reports ``cores`` busy cores and ``disks`` busy disks and NICs:
    the big host the 6 KB frame budget is written for."""

    def __init__(self, cores: int = 64, devices: int = 4) -> None:
        self.cores = cores
        self.devices = devices
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(psutil, name)

    def cpu_percent(self, percpu: bool = False, interval: float | None = None) -> Any:
        values = [100.0 if i % 2 else 99.9 for i in range(self.cores)]
        return values if percpu else sum(values) / len(values)

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> Any:
        self.reads += 1
        big = 10**15 + self.reads * 3_000_000_000
        return {
            f"nvme{i}n1": SimpleNamespace(read_bytes=big, write_bytes=big)
            for i in range(self.devices)
        }

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any:
        big = 10**15 + self.reads * 12_500_000_000
        return {
            f"enp{i}s0f0": SimpleNamespace(bytes_recv=big, bytes_sent=big)
            for i in range(self.devices)
        }


@pytest.fixture
def loaded_tiny_model(
    transactional_db, model_root, tiny_gguf_path, installed_once
) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """The tiny GGUF model installed and loaded in a real runner process."""
    from asgiref.sync import async_to_sync

    from opsdash.runs.runtime import get_supervisor, stop_supervisor
    from opsdash.runs.services import model_spec

    model = installed_once.ready(tiny_gguf_path, model_root)
    async_to_sync(get_supervisor().load)(model_spec(model))
    yield model
    stop_supervisor()


def loaded(
    model_id: int,
    pid: int,
    *,
    queue: int = 0,
    state: str = "idle",
    name: str | None = None,
    slug: str | None = None,
) -> LoadedRunner:
    """One runner as ``opsdash.runs.runtime.loaded_runners()`` reports it."""
    return LoadedRunner(
        model_id=model_id,
        name=name or f"model {model_id}",
        slug=slug or str(model_id),
        pid=pid,
        rss_bytes=0,
        loaded_at=None,
        last_used_at=None,
        queue_length=queue,
        state=state,
    )
