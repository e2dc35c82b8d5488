"""The agent (opsdash.fleet.agent) against a real hub: OpsDash's ASGI app under uvicorn.

The hub runs in a thread of the test process with an event loop of its own, so the test can
stop it and start it again on the same port (a hub restart) and reach the hub's in-memory
channel layer on that loop the way another hub process would through Redis: sending a node
work through its group and reading the events that come back on a reply channel. The agent is
the real ``Agent`` with its own supervisor (real runner processes, the tiny GGUF models) on
the test's loop; one test runs ``manage.py agent`` as a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings as django_settings

from opsdash.fleet import placements, protocol
from opsdash.fleet import services as fleet_services
from opsdash.fleet.agent import Agent, AgentConfig
from opsdash.fleet.agent_store import FetchFailed, fetch_file
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NAME = "gpu01"


class Hub:
    """The hub's ASGI app served by uvicorn on a fixed port, in a thread, restartable."""

    def __init__(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Any = None
        self.serving: Any = None

    def start(self) -> None:
        import uvicorn

        from opsdash.asgi import application

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(application, lifespan="off", log_level="warning")
        self.server = uvicorn.Server(config)

        async def serve() -> None:
            await self.server.serve(sockets=[sock])

        self.serving = asyncio.run_coroutine_threadsafe(serve(), self.loop)
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the hub did not start"
            assert not self.serving.done(), self.serving.exception()
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.serving.result(timeout=30)

    def call(self, work: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
        """Run ``work()`` on the hub's loop (where its channel layer lives)."""
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout)

    async def acall(self, work: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
        future = asyncio.run_coroutine_threadsafe(work(), self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fleet_mode(settings: Any) -> Iterator[None]:
    """The hub's admin verbs need fleet mode; the channel layer stays the in-memory one."""
    settings.FLEET = True
    settings.TELEMETRY_EMBEDDED = False
    yield
    from opsdash.fleet import health

    health.stop_sweeper()


@pytest.fixture
def hub(fleet_mode: None) -> Iterator[Hub]:
    channel_layers.backends.clear()  # a fresh in-memory layer, used on the hub's loop only
    instance = Hub()
    instance.start()
    try:
        yield instance
    finally:
        instance.close()
        channel_layers.backends.clear()


def node_token() -> str:
    return fleet_services.create_node_token(name="test", user=None)[1]


def make_agent(
    hub: Hub,
    tmp_path: Path,
    *,
    token: str,
    sampler: Any = False,
    model_roots: tuple[Path, ...] = (),
) -> Agent:
    config = AgentConfig(
        hub_url=hub.url,
        name=NAME,
        token=token,
        data_dir=tmp_path / "agent-data",
        models_dir=tmp_path / "agent-models",
        memory_budget_bytes=django_settings.MEMORY_BUDGET_BYTES,
        queue_depth=4,
        trial_load_timeout=120,
        version="test",
        model_roots=model_roots,
    )
    return Agent(config, sampler=sampler)


@contextlib.asynccontextmanager
async def running(agent: Agent) -> Any:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


async def until(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


async def node_row() -> Node | None:
    return await Node.objects.filter(name=NAME).afirst()


async def approve(hub: Hub) -> None:
    node = await Node.objects.aget(name=NAME)
    await hub.acall(
        lambda: database_sync_to_async(fleet_services.approve_node)(node=node, user=None)
    )


async def enrolled_and_approved(agent: Agent, hub: Hub) -> None:
    """Once the running ``agent`` has enrolled, approve its node and wait until it knows."""
    await agent.wait_welcomed(30)
    await approve(hub)
    await until(lambda: agent.approved, what="the approval to reach the agent")


async def placed_and_ready(hub: Hub, model: Any) -> Placement:
    """Place ``model`` on the node and wait until the agent reports it ready."""
    node = await Node.objects.aget(name=NAME)
    await hub.acall(
        lambda: database_sync_to_async(placements.place_model)(model=model, node=node, user=None)
    )
    return await until(
        lambda: Placement.objects.filter(model=model, status=PlacementStatus.READY).afirst(),
        timeout=60,
        what="the placement to be ready",
    )


class Reader:
    """A reply channel on the hub, read continuously (the in-memory layer holds 100 messages)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.events: list[dict[str, Any]] = []
        self.channel = hub.call(lambda: get_channel_layer().new_channel())
        self.task = asyncio.run_coroutine_threadsafe(self._read(), hub.loop)

    async def _read(self) -> None:
        layer = get_channel_layer()
        while True:
            message = await layer.receive(self.channel)
            self.events.append(message["event"])

    def send(self, message_type: str, **fields: Any) -> None:
        text = protocol.encode(message_type, reply_to=self.channel, **fields)

        async def send() -> None:
            await get_channel_layer().group_send(
                protocol.node_group(NAME), {"type": "agent.send", "text": text}
            )

        self.hub.call(send)

    def ended(self) -> bool:
        return any(e["type"] in ("done", "error") for e in self.events)

    def close(self) -> None:
        self.hub.loop.call_soon_threadsafe(self.task.cancel)


async def test_an_agent_enrolls_keeps_its_credential_private_and_streams_frames_once_approved(
    hub, tmp_path, settings
):
    from opsdash.telemetry import fleet as telemetry_fleet
    from opsdash.telemetry.sampler import Sampler
    from opsdash.telemetry.store import get_store, reset_store

    token = await database_sync_to_async(node_token)()
    agent = make_agent(hub, tmp_path, token=token)
    sampler = Sampler(
        tick_seconds=0.2,
        host=NAME,
        models_dir=tmp_path,
        persist=False,
        runners=agent.loaded_runners,
    )
    agent._sampler_option = sampler
    reset_store()
    try:
        async with running(agent):
            await agent.wait_welcomed(30)
            node = await node_row()
            assert node is not None and node.status == NodeStatus.PENDING
            assert node.cpu_count and node.memory_total_bytes
            assert node.version == "test"
            credential = agent.credential_path
            assert credential.read_text().strip().startswith("odc_")
            assert stat.S_IMODE(credential.stat().st_mode) == 0o600
            assert get_store().latest(NAME) is None  # pending: its frames are not shown

            await approve(hub)
            await until(lambda: agent.approved, what="the approval to reach the agent")
            frame = await until(lambda: get_store().latest(NAME), what="a frame on the hub")
            assert frame["host"] == NAME
    finally:
        telemetry_fleet.reset()
        reset_store()


async def test_it_redials_with_its_credential_when_the_hub_restarts_and_becomes_healthy_again(
    hub, tmp_path
):
    token_row, token = await database_sync_to_async(
        lambda: fleet_services.create_node_token(name="once", user=None)
    )()
    agent = make_agent(hub, tmp_path, token=token)
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        # The token is only for enrolling: revoked, the agent carries on with its credential.
        await database_sync_to_async(fleet_services.revoke_node_token)(token=token_row, user=None)

        await asyncio.to_thread(hub.stop)
        await until(lambda: not agent.connected, what="the agent to notice")
        await asyncio.sleep(1.0)  # it redials, with backoff, into a closed port
        await asyncio.to_thread(hub.start)
        await until(lambda: agent.sessions == 2, timeout=30, what="the agent to come back")
        node = await until(
            lambda: Node.objects.filter(name=NAME, status=NodeStatus.HEALTHY).afirst()
        )
        assert node.connected_via
        assert await Node.objects.acount() == 1


async def test_a_placed_model_is_fetched_trial_loaded_and_streams_a_generation(
    hub, tmp_path, tiny_model
):
    agent = make_agent(hub, tmp_path, token=await database_sync_to_async(node_token)())
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        placement = await placed_and_ready(hub, tiny_model)
        assert placement.error == ""
        held = agent.store.get(tiny_model.pk)
        assert held is not None and held.checked
        assert hashlib.sha256(Path(held.path).read_bytes()).hexdigest() == tiny_model.sha256
        assert Path(held.path).parent == tmp_path / "agent-models"

        reader = Reader(hub)
        try:
            reader.send(
                protocol.GENERATE,
                request_id="r1",
                model=placements.placement_spec(tiny_model),
                request={"prompt": "hello", "params": {"max_tokens": 12, "seed": 1}},
            )
            await until(reader.ended, timeout=60, what="the generation to end")
        finally:
            reader.close()
        events = reader.events
        assert events[0]["type"] == "accepted"
        tokens = [e for e in events if e["type"] == "token"]
        done = events[-1]
        assert done["type"] == "done", done
        assert done["completion_tokens"] == 12
        assert tokens and all(e["text"] for e in tokens)


async def test_a_fleet_run_served_by_a_real_agent_is_priced_with_the_nodes_measured_energy(
    hub, tmp_path, tiny_model
):
    from opsdash.runs.models import RunSource, RunStatus
    from opsdash.runs.services import RunRequest, execute_run, start_run
    from opsdash.savings.models import EnergySource, RunCost
    from opsdash.savings.money import energy_cost
    from opsdash.telemetry.sampler import Sampler
    from tests.savings.test_energy import FakePowercap
    from tests.telemetry.fake_nvml import FakeNvml

    # The node's CPU package draws 10 W (a powercap tree the real RAPL probe reads).
    rapl, began, drawing = FakePowercap(tmp_path / "powercap"), time.time(), threading.Event()

    def draw() -> None:
        while not drawing.wait(0.01):
            rapl.set(int((time.time() - began) * 10_000_000))

    threading.Thread(target=draw, daemon=True).start()
    agent = make_agent(hub, tmp_path, token=await database_sync_to_async(node_token)())
    agent._sampler_option = Sampler(
        tick_seconds=0.2,
        host=NAME,
        models_dir=tmp_path,
        nvml=FakeNvml(gpus=0),
        persist=False,
        powercap=rapl.root,
        runners=agent.loaded_runners,
    )
    try:
        async with running(agent):
            await enrolled_and_approved(agent, hub)
            await placed_and_ready(hub, tiny_model)
            await until(lambda: Node.objects.filter(name=NAME, status=NodeStatus.HEALTHY).aexists())
            run = await database_sync_to_async(start_run)(
                request=RunRequest(
                    model_id=tiny_model.pk, prompt="hello", params={"max_tokens": 8, "seed": 1}
                ),
                user=None,
                source=RunSource.API,
            )
            final = await hub.acall(lambda: execute_run(run), timeout=60)
    finally:
        drawing.set()
    assert (final.status, final.node) == (RunStatus.OK, NAME), final.error
    cost = await RunCost.objects.aget(run=final)
    assert cost.energy_source == EnergySource.MEASURED, cost.energy_basis
    assert cost.energy_devices == ["cpu:intel-rapl:0"]
    assert cost.energy_basis.startswith(f"node {NAME}: cpu:intel-rapl:0 energy counters")
    # 10 W during the generation on the node, which lies within the run's time on the hub.
    seconds = (final.finished_at - final.started_at).total_seconds()
    assert 0 < cost.energy_mj <= 10 * 1000 * (seconds + 0.5)
    assert cost.local_nusd == energy_cost(cost.energy_mj, cost.electricity_nusd_per_kwh)


async def test_it_keeps_generating_while_the_hub_is_away_and_delivers_the_rest_after(
    hub, tmp_path, endless_model
):
    agent = make_agent(hub, tmp_path, token=await database_sync_to_async(node_token)())
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        await placed_and_ready(hub, endless_model)
        reader = Reader(hub)
        try:
            reader.send(
                protocol.GENERATE,
                request_id="long",
                model=placements.placement_spec(endless_model),
                request={"prompt": "hello", "params": {"max_tokens": 100_000}},
            )
            await until(lambda: len(reader.events) > 5, timeout=60, what="the first tokens")
            await asyncio.to_thread(hub.stop)
            await until(lambda: not agent.connected)
            await until(lambda: len(agent._outbox) > 20, what="events to wait in the outbox")
            before = len(reader.events)
            waiting = len(agent._outbox)
            await asyncio.to_thread(hub.start)
            await until(lambda: agent.sessions == 2, timeout=30)
            # What was generated meanwhile arrives, in order, after the tokens of before.
            await until(lambda: len(reader.events) >= before + waiting, what="the buffered events")
            reader.send(protocol.CANCEL, request_id="long")
            await until(reader.ended, timeout=30, what="the cancelled generation to end")
        finally:
            reader.close()
        done = reader.events[-1]
        assert done["type"] == "done"
        assert done["finish_reason"] == "cancelled"
        tokens = [e for e in reader.events if e["type"] == "token"]
        assert len(tokens) >= before + waiting - 1
        assert done["completion_tokens"] >= len(tokens)


async def test_a_file_whose_sha256_is_not_the_one_asked_for_fails_the_placement_cleanly(
    hub, tmp_path, tiny_model
):
    agent = make_agent(hub, tmp_path, token=await database_sync_to_async(node_token)())
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        await placed_and_ready(hub, tiny_model)
        # The hub serves the right file; the node is told to expect other bytes.
        wrong = placements.placement_spec(tiny_model) | {"sha256": "0" * 64}
        await hub.acall(
            lambda: get_channel_layer().group_send(
                protocol.node_group(NAME),
                {"type": "agent.send", "text": protocol.encode(protocol.PLACE, placement=wrong)},
            )
        )
        failed = await until(
            lambda: Placement.objects.filter(status=PlacementStatus.FAILED).afirst(), timeout=30
        )
        assert "sha256" in failed.error and "0" * 64 in failed.error
        assert failed.error.endswith("deploy it again.")
        assert not (tmp_path / "agent-models" / ".partial" / ("0" * 64)).exists()
        assert agent.store.by_sha256("0" * 64) is None
        assert agent.store.get(tiny_model.pk).sha256 == tiny_model.sha256  # the good copy stays


class _CuttingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``data`` with Range support; the first response stops halfway."""

    data = b""
    cut_first = True
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cls = type(self)
        cls.ranges.append(self.headers.get("Range"))
        assert self.headers.get("Authorization") == "Bearer odc_test"
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(cls.data) - 1}/{len(cls.data)}")
        else:
            self.send_response(200)
        body = cls.data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cut_first:
            cls.cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_broken_fetch_resumes_with_range_and_checks_the_whole_files_sha256(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    _CuttingHandler.data, _CuttingHandler.cut_first, _CuttingHandler.ranges = data, True, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CuttingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/fleet/files/x"
    try:
        sha256 = hashlib.sha256(data).hexdigest()
        seen: list[int] = []
        final = tmp_path / "models" / "m.gguf"
        size = fetch_file(
            url=url,
            credential="odc_test",
            sha256=sha256,
            partial=tmp_path / "models" / ".partial" / sha256,
            final=final,
            progress=seen.append,
            retry_seconds=0,
        )
        assert size == len(data)
        assert final.read_bytes() == data
        assert _CuttingHandler.ranges[0] is None
        assert _CuttingHandler.ranges[1] is not None and _CuttingHandler.ranges[1] != "bytes=0-"
        assert seen[-1] == len(data)

        _CuttingHandler.cut_first = False
        partial = tmp_path / "models" / ".partial" / "wrong"
        with pytest.raises(FetchFailed) as refused:
            fetch_file(
                url=url,
                credential="odc_test",
                sha256="f" * 64,
                partial=partial,
                final=tmp_path / "models" / "other.gguf",
            )
        assert "not the expected" in refused.value.reason
        assert not partial.exists()
        assert not (tmp_path / "models" / "other.gguf").exists()
    finally:
        server.shutdown()


def test_manage_py_agent_enrolls_without_a_database_and_stops_cleanly_on_sigterm(hub, tmp_path):
    token = node_token()
    data_dir = tmp_path / "node-data"
    env = dict(
        os.environ,
        OPSDASH_DATA_DIR=str(data_dir),
        OPSDASH_MODELS_DIR=str(tmp_path / "node-models"),
        OPSDASH_HUB_URL=hub.url,
        OPSDASH_NODE_TOKEN=token,
        OPSDASH_NODE_NAME=NAME,
        OPSDASH_TELEMETRY_TICK_MS="500",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "agent"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "node-credential").exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the agent did not enroll"
            time.sleep(0.1)
        assert Node.objects.get(name=NAME).status == NodeStatus.PENDING
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "stopped" in output
    # The agent's settings name a SQLite file in its data folder; it never opened it.
    assert not list(data_dir.glob("*.sqlite3*"))
