"""The sampler: per-model attribution, NVML trouble, bounded history, latest wins at the source."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from opsdash.runs.runtime import LoadedRunner
from opsdash.telemetry.sampler import Sampler, get_sampler
from tests.telemetry.conftest import loaded
from tests.telemetry.fake_nvml import GIB, FakeNvml


def wait_for(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_loaded_model_appears_with_its_runner_process_figures(loaded_tiny_model):
    sampler = get_sampler()

    def runner():  # type: ignore[no-untyped-def]
        frame = sampler.latest(wait=3)
        found = [r for r in frame["runners"] if r["model"] == loaded_tiny_model.pk] if frame else []
        return found and found[0]["name"] == loaded_tiny_model.name and found[0]

    entry = wait_for(runner)
    assert entry["slug"] == loaded_tiny_model.slug, "the label /metrics gives the run counters"
    assert entry["pid"] != os.getpid() and entry["rss_bytes"] > 5 * 1024 * 1024
    assert entry["threads"] >= 1 and entry["state"] in {"idle", "busy"}
    assert entry["gpu_mem_bytes"] is None or entry["gpu_mem_bytes"] >= 0
    assert sampler.latest()["server"]["pid"] == os.getpid()


def test_gpu_memory_is_attributed_to_the_runner_that_holds_it(tmp_path):
    pid = os.getpid()  # stands for a runner: the process table needs a live pid
    nvml = FakeNvml(gpus=2, processes={0: [(pid, 3 * GIB)], 1: [(pid, GIB), (4242, GIB)]})
    sampler = Sampler(
        tick_seconds=1.0,
        host="h",
        models_dir=tmp_path,
        nvml=nvml,
        runners=lambda: [loaded(7, pid, queue=1, state="busy")],
        persist=False,
    )

    frame = sampler.tick()

    [runner] = frame["runners"]
    assert runner["model"] == 7 and runner["gpu_mem_bytes"] == 4 * GIB
    assert runner["queue"] == 1 and runner["name"] == "model 7"


def test_a_gpu_lost_mid_stream_is_named_and_cpu_figures_carry_on(tmp_path):
    nvml = FakeNvml(gpus=1)
    sampler = Sampler(tick_seconds=1.0, host="h", models_dir=tmp_path, nvml=nvml, persist=False)
    assert sampler.tick()["gpu_state"] == "ok"

    nvml.lose(0)
    frame = sampler.tick()

    assert frame["gpu_state"] == "error: GPU 0: GPU is lost" and frame["gpus"] == []
    assert "GPU is lost" in frame["gpu_detail"]
    assert frame["cpu"]["percent"] and frame["memory"]["total_bytes"] > 0


def test_a_failing_runner_table_does_not_stop_the_frames(tmp_path):
    def broken() -> list[LoadedRunner]:
        raise RuntimeError("supervisor gone")

    sampler = Sampler(
        tick_seconds=1.0, host="h", models_dir=tmp_path, runners=broken, persist=False
    )

    frame = sampler.tick()

    assert frame["runners"] == [] and frame["cpu"]["percent"]


def test_memory_history_keeps_15_minutes_of_1_second_frames(tmp_path):
    sampler = Sampler(tick_seconds=1.0, host="h", models_dir=tmp_path, persist=False)
    for _ in range(930):
        sampler.tick()

    history = json.loads(sampler.history_text())

    assert history["type"] == "history" and history["host"] == "h"
    assert len(history["frames"]) == 900
    times = [f["t"] for f in history["frames"]]
    assert times == sorted(times)
    assert sampler.history_text() is sampler.history_text(), "built once per tick"


def test_a_busy_event_loop_gets_only_the_latest_frame(tmp_path):
    sampler = Sampler(tick_seconds=1.0, host="h", models_dir=tmp_path, persist=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        release = threading.Event()
        loop.call_soon_threadsafe(release.wait, 5)  # the loop is stuck in something long
        time.sleep(0.05)
        sampler.attach(loop)
        for _ in range(10):
            sampler.tick()
        assert (sampler.published, sampler.dropped) == (1, 9), "no queue builds up"
        release.set()
        wait_for(lambda: sampler._inflight is not None and sampler._inflight.done())
        sampler.tick()
        assert sampler.published == 2
        wait_for(lambda: sampler._inflight.done())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    sampler.tick()  # a closed loop is let go, not an error
    assert sampler._loop is None


@pytest.mark.django_db(transaction=True)
def test_the_running_sampler_ticks_at_the_configured_rate():
    sampler = get_sampler()
    first = sampler.latest(wait=3)
    assert first is not None
    start, started = sampler.ticks, time.monotonic()
    wait_for(lambda: sampler.ticks >= start + 5)  # a loaded machine may be slower, never faster
    elapsed = time.monotonic() - started
    later = sampler.latest()

    assert later is not None and later["t"] > first["t"]
    # 10 ticks a second in the tests: five more ticks take at least four full periods.
    assert elapsed >= 4 * 0.1 * 0.95, f"5 ticks in {elapsed:.3f} s"


def test_the_sampler_records_the_cpu_seconds_of_the_processes_it_watches(tmp_path, monkeypatch):
    from opsdash.telemetry import sampler as sampler_module

    monkeypatch.setattr(sampler_module, "PROCESS_SECONDS", 0.0)  # the table on every tick
    sampler = Sampler(tick_seconds=1.0, host="h", models_dir=tmp_path, persist=False)
    sampler.tick()
    after_first = time.time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # this process (the server) keeps a core busy
        pass
    before_second = time.time()
    sampler.tick()

    used = sampler.energy.cpu_seconds_between(os.getpid(), after_first, before_second)
    assert used is not None and used > 0.1
    assert sampler.energy.cpu_seconds_between(4242, after_first, before_second) is None
