"""Telemetry benchmarks, both in one run.

1. Sampler cost. The sampler the web process embeds (and each fleet agent runs: psutil every
   second, process table every 2 s, NVML, minute rows into SQLite) runs in a process of its own
   (``SAMPLER_ONLY`` below) for N seconds; so does Glances (the peer, from PyPI), headless at
   the same 1 s interval (``glances --stdout cpu.total,mem.percent -t 1``). Each process's CPU
   seconds are read with psutil over the same window, after a warm-up that leaves out start-up
   and imports.
   Reported: CPU seconds per hour, % of one core, and the ratio OpsDash / Glances.
   Goal: under 0.5% of one core and at most half of Glances.

2. Fan-out. A real uvicorn serving OpsDash (embedded sampler, in-memory channel layer) and 200
   websocket clients signed in as an operator, each acknowledging every message as the page
   does, for N seconds. Reported: frames per client, the delay of each frame from its ``t``
   (sampling time) to its arrival, p50 / p99 / max, and clients that got fewer than 90% of the
   ticks (starved). Goal: p99 under 100 ms, no client starved. The clients share the host (and
   its cores) with the server and run in one process, so their own work is in the figures.

    .venv/bin/python bench/telemetry.py [--seconds 60] [--clients 200] [--part cost|fanout|all]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stream import PASSWORD, free_port, manage, session_cookie  # noqa: E402

WARM_UP_SECONDS = 5.0

# The sampler alone in a process, until SIGTERM (then it stores its last minute row).
SAMPLER_ONLY = """
import os, signal, threading, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
django.setup()
from opsdash.telemetry.sampler import Sampler
sampler = Sampler.from_settings()
sampler.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print(f"telemetry agent for {sampler.host}", flush=True)
stop.wait()
sampler.stop()
"""


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(process: subprocess.Popen[str], seconds: float) -> float:
    """CPU seconds ``process`` uses over ``seconds``, after the warm-up."""
    time.sleep(WARM_UP_SECONDS)
    before = cpu_seconds(process.pid)
    time.sleep(seconds)
    return cpu_seconds(process.pid) - before


def count_lines(stream: object, counter: list[int], needle: str) -> threading.Thread:
    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            if needle in line:
                counter[0] += 1

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return
        if not line and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
    raise RuntimeError(f"{process.args} did not print {needle!r} in {timeout} s")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def sampler_cost(env: dict[str, str], seconds: float) -> dict[str, tuple[float, float]]:
    """{name: (CPU seconds over the window, ticks seen)} for OpsDash's sampler and Glances."""
    results: dict[str, tuple[float, float]] = {}

    agent = subprocess.Popen(
        [sys.executable, "-c", SAMPLER_ONLY],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_line(agent, "telemetry agent for")
        used = measure(agent, seconds)
    finally:
        stop(agent)  # SIGTERM: the agent stores its last minute row on the way out
    samples = manage(
        env,
        "shell",
        "-c",
        "from opsdash.telemetry.models import MinuteFigures as M; "
        "print(sum(M.objects.values_list('samples', flat=True)))",
    )
    results["OpsDash sampler (own process)"] = (used, float(samples.split()[-1]))

    glances_bin = Path(sys.executable).parent / "glances"
    if not glances_bin.exists():
        raise SystemExit("Glances is missing: make bench installs it (pip install -e '.[bench]').")
    glances = subprocess.Popen(
        [str(glances_bin), "--stdout", "cpu.total,mem.percent", "-t", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ticks = [0]
    try:
        wait_for_line(glances, "cpu.total")
        count_lines(glances.stdout, ticks, "cpu.total")
        used = measure(glances, seconds)
        seen = ticks[0]
    finally:
        stop(glances)
    results["Glances 4 --stdout -t 1 (peer)"] = (used, float(seen))
    return results


async def fan_out(base: str, cookie: str, clients: int, seconds: float) -> dict[str, object]:
    import websockets

    url = base.replace("http://", "ws://") + "/ws/telemetry/"
    delays: list[float] = []
    per_client: list[int] = [0] * clients
    closed: list[int] = []
    window: dict[str, float] = {}

    async def client(i: int, ready: asyncio.Event) -> None:
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": base}, max_size=None
        ) as ws:
            ready.set()
            try:
                while True:
                    text = await ws.recv()
                    arrived = time.time() * 1000
                    await ws.send('{"type":"ack"}')
                    message = json.loads(text)
                    start = window.get("start")
                    if message["type"] != "frame" or start is None or arrived < start:
                        continue
                    if arrived > window["end"]:
                        return
                    per_client[i] += 1
                    delays.append(arrived - message["t"])
            except websockets.ConnectionClosed:
                closed.append(i)

    tasks = []
    for batch in range(0, clients, 20):  # connect in batches, as pages opening over a moment
        events = []
        for i in range(batch, min(batch + 20, clients)):
            ready = asyncio.Event()
            events.append(ready)
            tasks.append(asyncio.create_task(client(i, ready)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    await asyncio.sleep(2)
    # The clients' own garbage collector would pause all 200 of them at once and count as
    # server delay: hold it during the window.
    gc.collect()
    gc.disable()
    window["start"] = time.time() * 1000
    window["end"] = window["start"] + seconds * 1000
    try:
        await asyncio.wait(tasks, timeout=seconds + 10)
    finally:
        gc.enable()
    for task in tasks:
        task.cancel()
    delays.sort()
    return {"delays": delays, "per_client": per_client, "closed": closed}


def _busy_seconds() -> float:
    """CPU seconds the whole host has spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_fan_out(env: dict[str, str], clients: int, seconds: float) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "opsdash.asgi:application",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            time.sleep(0.1)
        cookie = session_cookie(base)
        time.sleep(3)
        server_before = cpu_seconds(server.pid)
        own_before = cpu_seconds(os.getpid())
        host_before = _busy_seconds()
        result = asyncio.run(fan_out(base, cookie, clients, seconds))
        server_cpu = cpu_seconds(server.pid) - server_before
        clients_cpu = cpu_seconds(os.getpid()) - own_before
        others_cpu = _busy_seconds() - host_before - server_cpu - clients_cpu
    finally:
        stop(server)  # type: ignore[arg-type]

    delays: list[float] = result["delays"]  # type: ignore[assignment]
    counts: list[int] = result["per_client"]  # type: ignore[assignment]
    closed: list[int] = result["closed"]  # type: ignore[assignment]
    expected = seconds  # one frame a second
    starved = [c for c in counts if c < 0.9 * expected]
    print(f"\n2. Fan-out: {clients} websocket clients on a live uvicorn for {seconds:g} s")
    print(
        f"  frames per client: min {min(counts)}, median {statistics.median(counts):g}, "
        f"max {max(counts)} (one a second: {expected:g})"
    )
    print(
        f"  delay from the frame's t to arrival: p50 {percentile(delays, 50):.1f} ms, "
        f"p99 {percentile(delays, 99):.1f} ms, max {percentile(delays, 100):.1f} ms "
        f"({len(delays)} frames)"
    )
    print(
        f"  starved clients (< 90% of the ticks): {len(starved)}; "
        f"closed by the server: {len(closed)}"
    )
    span = seconds + 2
    print(
        f"  CPU meanwhile: uvicorn {100 * server_cpu / span:.1f}% of one core, the clients "
        f"{100 * clients_cpu / span:.1f}%, other processes on this {psutil.cpu_count()}-core "
        f"host {100 * max(others_cpu, 0) / span:.1f}% (they delay frames too)"
    )
    ok = percentile(delays, 99) < 100 and not starved and not closed
    print(f"  goal (p99 < 100 ms, no client starved): {'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--part", choices=["cost", "fanout", "all"], default="all")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {
            "OPSDASH_DATA_DIR": str(Path(tmp) / "data"),
            "OPSDASH_DEMO_PASSWORD": PASSWORD,
            "OPSDASH_LOG_LEVEL": "WARNING",
        }
        manage(env, "migrate", "-v0")
        manage(env, "bootstrap", "--demo")
        print(
            f"Host: {psutil.cpu_count()} logical CPUs, "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
        )

        if args.part in {"cost", "all"}:
            results = sampler_cost(env, args.seconds)
            print(
                f"\n1. Sampler cost at 1 Hz, {args.seconds:g} s "
                f"measured after {WARM_UP_SECONDS:g} s"
            )
            rows = []
            for name, (used, ticks) in results.items():
                per_hour = used / args.seconds * 3600
                core = 100 * used / args.seconds
                rows.append(core)
                print(
                    f"  {name:36} {used:6.2f} CPU s = {per_hour:6.1f} CPU s/hour = "
                    f"{core:5.2f}% of one core ({ticks:g} samples)"
                )
            ours, peer = rows
            print(f"  ratio OpsDash / Glances: {ours / peer:.3f}")
            met = ours < 0.5 and ours <= peer / 2
            print(
                f"  goal (< 0.5% of a core and <= half of Glances): {'met' if met else 'NOT met'}"
            )

        if args.part in {"fanout", "all"}:
            run_fan_out(env, args.clients, args.seconds)


if __name__ == "__main__":
    main()
