"""The frame: the shape scripts rely on (DESIGN.md) and its 6 KB budget on a big host."""

from __future__ import annotations

import json
import time
from pathlib import Path

from opsdash.telemetry import frames
from opsdash.telemetry.sampler import Sampler
from tests.telemetry.conftest import ManyCores, loaded
from tests.telemetry.fake_nvml import GIB, FakeNvml

DESIGN_KEYS = {"type", "t", "host", "cpu", "memory", "disk", "net", "gpu_state", "gpus", "runners"}


def fake_sys(root: Path, disks: int, nics: int) -> str:
    """/sys/block and /sys/class/net with that many physical disks and NICs."""
    for i in range(disks):
        (root / "block" / f"nvme{i}n1" / "device").mkdir(parents=True)
    for i in range(nics):
        (root / "class" / "net" / f"enp{i}s0f0" / "device").mkdir(parents=True)
    return str(root)


def big_host_sampler(tmp_path: Path, **options) -> Sampler:  # type: ignore[no-untyped-def]
    """A 64-core, 8-GPU inference node, everything busy: two 70B models loaded, four NVMe
    disks and two NICs moving gigabytes a second, counters in the petabytes."""
    runners = [
        loaded(
            1000 + i,
            1,
            queue=4,
            state="busy",
            name=f"Llama-3.1-70B-Instruct-Q4_K_M #{i}",
            slug=f"llama-3-1-70b-instruct-q4-k-m-{i}",
        )
        for i in range(2)
    ]
    nvml = FakeNvml(gpus=8, memory_used=79 * GIB, processes={i: [(1, 70 * GIB)] for i in range(8)})
    sampler = Sampler(
        tick_seconds=1.0,
        host="gpu-node-01.example.internal",
        models_dir=tmp_path,
        nvml=nvml,
        ps=ManyCores(64, devices=8),
        runners=lambda: runners,
        persist=False,
        sys_root=fake_sys(tmp_path / "sys", disks=4, nics=2),
        **options,
    )
    return sampler


def test_a_frame_has_the_stable_shape(tmp_path):
    sampler = Sampler(tick_seconds=1.0, host="h", models_dir=tmp_path, persist=False)
    frame = sampler.tick()

    assert set(frame) >= DESIGN_KEYS
    assert frame["type"] == "frame" and frame["host"] == "h"
    assert abs(frame["t"] - time.time() * 1000) < 5000
    assert {"percent", "total", "freq_mhz", "load"} <= set(frame["cpu"])
    assert len(frame["cpu"]["load"]) == 3 and frame["cpu"]["percent"]
    assert set(frame["memory"]) >= {
        "total_bytes",
        "used_bytes",
        "available_bytes",
        "swap_total_bytes",
        "swap_used_bytes",
    }
    assert (
        frame["memory"]["used_bytes"] + frame["memory"]["available_bytes"]
        == frame["memory"]["total_bytes"]
    )
    assert frame["disk"]["models_free_bytes"] > 0
    assert isinstance(frame["gpus"], list) and isinstance(frame["runners"], list)
    assert frame["server"]["rss_bytes"] > 10 * 1024 * 1024, "OpsDash's own process is measured"
    assert json.loads(sampler.latest_text()) == json.loads(frames.encode(frame))


def test_eight_gpus_with_their_health_figures_and_64_cores_fit_in_6_kb(tmp_path):
    sampler = big_host_sampler(tmp_path)
    sampler.tick()
    frame = sampler.tick()  # the second has rates and the process table

    text = sampler.latest_text()
    assert len(frame["gpus"]) == 8 and len(frame["cpu"]["percent"]) == 64
    assert len(frame["runners"]) == 2 and frame["runners"][0]["gpu_mem_bytes"] == 8 * 70 * GIB
    assert frame["disk"]["read_bytes_s"] > 10**9, "big rates, big numbers"
    assert len(frame["disk"]["devices"]) == 4 and len(frame["net"]["interfaces"]) == 2
    assert all(g["ecc"] == [0, 0, 0, 0] and g["procs"] for g in frame["gpus"]), "health included"
    assert len(text.encode()) <= frames.FRAME_BUDGET_BYTES, f"{len(text.encode())} bytes"
    print(f"8 GPUs, 64 cores, 2 models, 4 disks, 2 NICs: {len(text.encode())} bytes")


def test_history_frames_keep_every_charted_figure_without_per_core_detail(tmp_path):
    sampler = big_host_sampler(tmp_path)
    frame = sampler.tick()

    light = frames.lite(frame)

    assert "percent" not in light["cpu"] and "runners" not in light
    assert frames.series_of(light) == frames.series_of(frame)
    assert {"cpu", "mem_used", "net_rx", "gpu7_util", "gpu7_power", "models_free"} <= set(
        frames.series_of(frame)
    )
