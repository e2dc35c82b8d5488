"""Generation on fleet nodes, hub side (opsdash.fleet.remote through the run path).

The hub is the unit: each node is a scripted peer on the real in-memory channel layer, a task
in the node's group that reads what the hub sends (``generate``, ``cancel``) and answers with
the agent link's own messages, as the hub process holding the node's socket would relay them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from django.utils import timezone

from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel
from opsdash.core.errors import Code
from opsdash.fleet import health, protocol, remote
from opsdash.fleet import services as fleet_services
from opsdash.fleet.models import Node, Placement, PlacementStatus
from opsdash.gateway.services import create_api_key
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.services import RunRefused, RunRequest, execute_run, start_run
from opsdash.savings.models import EnergySource, RunCost
from tests import factories
from tests.fleet.test_routing import make_node

pytestmark = pytest.mark.django_db(transaction=True)

DONE = {
    "type": "done",
    "finish_reason": "stop",
    "prompt_tokens": 4,
    "completion_tokens": 2,
    "ttft_ms": 12.5,
    "total_ms": 40.0,
    "tokens_per_second": 50.0,
    "queue_ms": 0.0,
    "load_ms": 0.0,
    "cpu_seconds": 0.2,
    "pid": 4242,
}


@pytest.fixture(autouse=True)
def fleet_hub(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """This process is a fleet hub on a fresh in-memory channel layer of its own."""
    settings.FLEET = True
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    remote.reset()
    yield
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    remote.reset()


@pytest.fixture
def quick_failover(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(protocol, "ACCEPT_TIMEOUT_SECONDS", 0.4)


class Peer:
    """A scripted node: what the hub process holding its socket receives, and its answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.layer = get_channel_layer()
        self.channel = ""
        self.heard: list[dict[str, Any]] = []

    async def join(self) -> Peer:
        self.channel = await self.layer.new_channel("agent")
        await self.layer.group_add(protocol.node_group(self.name), self.channel)
        return self

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        message = await asyncio.wait_for(self.layer.receive(self.channel), timeout)
        assert message["type"] == "agent.send", message
        decoded = protocol.decode(message["text"])
        self.heard.append(decoded)
        return decoded

    async def silent(self, timeout: float = 0.3) -> bool:
        try:
            await self.next(timeout)
        except TimeoutError:
            return True
        return False

    async def emit(self, generate: dict[str, Any], event: dict[str, Any]) -> None:
        relayed = {"type": "agent.event", "request_id": generate["request_id"], "event": event}
        await self.layer.send(generate["reply_to"], relayed)

    async def answer(self, generate: dict[str, Any], *texts: str, **done: Any) -> None:
        await self.emit(generate, {"type": "accepted"})
        for text in texts:
            await self.emit(generate, {"type": "token", "text": text})
        await self.emit(generate, DONE | done)


async def node(name: str, model: LocalModel, **fields: Any) -> Peer:
    await sync_to_async(make_node)(name, model, **fields)
    return await Peer(name).join()


@pytest.fixture
async def model() -> LocalModel:
    return await sync_to_async(factories.local_model)("tiny-llama", sha256="c" * 64)


async def started(model: LocalModel, **params: Any) -> Run:
    return await sync_to_async(start_run)(
        request=RunRequest(model_id=model.pk, prompt="hello", params=params),
        user=None,
        source=RunSource.API,
    )


async def gather_run(run: Run, **kwargs: Any) -> tuple[Run, list[str]]:
    pieces: list[str] = []

    async def on_token(text: str) -> None:
        pieces.append(text)

    task = asyncio.ensure_future(execute_run(run, on_token=on_token, **kwargs))
    return await asyncio.wait_for(task, 20), pieces


async def test_a_run_is_generated_on_the_node_and_records_its_text_usage_and_node(model):
    peer = await node("gpu-1", model)
    run = await started(model, max_tokens=7, temperature=0)
    assert run.node == ""  # chosen when a node accepts

    async def agent() -> None:
        generate = await peer.next()
        assert generate["type"] == protocol.GENERATE
        assert generate["model"]["model_id"] == model.pk
        assert generate["model"]["sha256"] == "c" * 64
        assert generate["request"]["prompt"] == "hello"
        assert generate["request"]["params"]["max_tokens"] == 7
        assert generate["request"]["params"]["temperature"] == 0
        await peer.answer(generate, "Hel", "lo", energy_joules=3.25, energy_source="measured")

    script = asyncio.ensure_future(agent())
    final, pieces = await gather_run(run)
    await script

    assert pieces == ["Hel", "lo"]
    assert final.status == RunStatus.OK and final.output == "Hello"
    assert final.node == "gpu-1"
    assert (final.prompt_tokens, final.completion_tokens, final.ttft_ms) == (4, 2, 12.5)
    cost = await RunCost.objects.aget(run_id=run.pk)
    # The node measured it; the hub's own counters saw none of it.
    assert (cost.energy_mj, cost.energy_source) == (3250, EnergySource.MEASURED)
    assert "gpu-1" in cost.energy_basis


async def test_a_node_that_never_accepts_is_skipped_and_the_next_one_serves(model, quick_failover):
    first = await node("gpu-1", model, queue_length=0)
    second = await node("gpu-2", model, queue_length=1)
    run = await started(model)

    async def second_agent() -> None:
        generate = await second.next()
        await second.answer(generate, "fine")

    script = asyncio.ensure_future(second_agent())
    final, _ = await gather_run(run)
    await script

    assert final.status == RunStatus.OK and final.output == "fine"
    assert final.node == "gpu-2"
    # gpu-1 got the request first (shorter queue), then was told to drop it, so a late start
    # there cannot generate it twice; gpu-2 got it under another request id.
    asked, dropped = await first.next(), await first.next()
    assert asked["type"] == protocol.GENERATE and dropped["type"] == protocol.CANCEL
    assert dropped["request_id"] == asked["request_id"]
    assert second.heard[0]["request_id"] != asked["request_id"]


async def test_a_node_that_refuses_before_accepting_passes_the_request_on(model):
    first = await node("gpu-1", model)
    second = await node("gpu-2", model, queue_length=2)
    run = await started(model)

    async def agents() -> None:
        refused = await first.next()
        await first.emit(refused, {"type": "error", "code": "load_failed", "reason": "No file."})
        await second.answer(await second.next(), "ok")

    script = asyncio.ensure_future(agents())
    final, _ = await gather_run(run)
    await script

    assert (final.status, final.node, final.output) == (RunStatus.OK, "gpu-2", "ok")


async def test_a_node_lost_mid_generation_ends_the_run_error_with_the_text_so_far(model, settings):
    settings.NODE_UNHEALTHY_SECONDS = 1
    peer = await node("gpu-1", model)
    spare = await node("gpu-2", model, queue_length=5)
    run = await started(model)

    async def agent_then_unplugged() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        await peer.emit(generate, {"type": "token", "text": "partial"})
        # Unplugged: no more events, and no heartbeat moves last_seen on.

    script = asyncio.ensure_future(agent_then_unplugged())
    final, pieces = await gather_run(run)
    await script

    assert final.status == RunStatus.ERROR
    assert final.error_code == Code.NODE_LOST
    assert final.error.startswith("node lost: gpu-1 stopped answering")
    assert final.output == "partial" and pieces == ["partial"]
    assert final.node == "gpu-1"
    # The request had started: it is not repeated elsewhere (the client has text already).
    assert await spare.silent()
    # If the node comes back, it is told to drop the orphaned generation.
    assert (await peer.next())["type"] == protocol.CANCEL


async def test_a_node_heard_from_keeps_a_slow_generation_alive(model, settings):
    settings.NODE_UNHEALTHY_SECONDS = 1
    peer = await node("gpu-1", model)
    run = await started(model)

    async def slow_agent() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        for _ in range(4):  # 2 s of silence in the stream, heartbeats all along
            await asyncio.sleep(0.5)
            await Node.objects.filter(name="gpu-1").aupdate(last_seen=timezone.now())
        await peer.answer(generate, "slow")

    script = asyncio.ensure_future(slow_agent())
    final, _ = await gather_run(run)
    await script

    assert (final.status, final.output) == (RunStatus.OK, "slow")


async def test_a_cancelled_run_tells_the_node_and_keeps_its_text_and_counts(model):
    peer = await node("gpu-1", model)
    run = await started(model)
    cancel = asyncio.Event()

    async def agent() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        await peer.emit(generate, {"type": "token", "text": "so far"})
        stop = await peer.next()
        assert stop == {"type": protocol.CANCEL, "request_id": generate["request_id"]}
        await peer.emit(generate, DONE | {"finish_reason": "cancelled", "completion_tokens": 1})

    async def on_token(text: str) -> None:
        cancel.set()

    script = asyncio.ensure_future(agent())
    final = await asyncio.wait_for(execute_run(run, on_token=on_token, cancel=cancel), 20)
    await script

    assert final.status == RunStatus.CANCELLED
    assert (final.output, final.completion_tokens) == ("so far", 1)


async def test_a_run_cancelled_while_its_node_is_gone_ends_cancelled_not_lost(model, settings):
    settings.NODE_UNHEALTHY_SECONDS = 1
    peer = await node("gpu-1", model)
    run = await started(model)
    cancel = asyncio.Event()

    async def agent_then_unplugged() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        await peer.emit(generate, {"type": "token", "text": "so far"})

    async def on_token(text: str) -> None:
        cancel.set()

    script = asyncio.ensure_future(agent_then_unplugged())
    final = await asyncio.wait_for(execute_run(run, on_token=on_token, cancel=cancel), 20)
    await script

    assert (final.status, final.output) == (RunStatus.CANCELLED, "so far")


async def test_a_busy_node_answers_busy(model):
    peer = await node("gpu-1", model)
    run = await started(model)

    async def agent() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        await peer.emit(generate, {"type": "error", "code": "busy", "reason": "The queue is full."})

    script = asyncio.ensure_future(agent())
    final, _ = await gather_run(run)
    await script

    assert (final.status, final.error_code, final.error) == (
        RunStatus.ERROR,
        Code.BUSY,
        "The queue is full.",
    )


async def test_a_server_shutdown_interrupts_remote_generations_and_cancels_them_on_the_node(
    model,
):
    peer = await node("gpu-1", model)
    run = await started(model)

    async def agent() -> None:
        generate = await peer.next()
        await peer.emit(generate, {"type": "accepted"})
        await peer.emit(generate, {"type": "token", "text": "half"})

    async def on_token(text: str) -> None:
        remote.interrupt()  # what the stop signal does

    script = asyncio.ensure_future(agent())
    final = await asyncio.wait_for(execute_run(run, on_token=on_token), 20)
    await script

    assert final.status == RunStatus.INTERRUPTED and final.output == "half"
    assert (await peer.next())["type"] == protocol.CANCEL


# ----------------------------------------------------------------------------- no node at all


async def test_with_no_node_for_the_model_start_run_refuses_503_naming_why_and_writes_no_row(
    model,
):
    await sync_to_async(make_node)("gpu-1", model, draining=True)

    with pytest.raises(RunRefused) as refused:
        await started(model)

    assert refused.value.code == Code.NO_NODE and refused.value.status == 503
    assert "gpu-1 is draining" in refused.value.reason
    assert await Run.objects.acount() == 0


async def test_when_every_node_stays_silent_the_run_ends_no_node_and_the_api_answers_503(
    model, operator, quick_failover
):
    await node("gpu-1", model)
    token = await sync_to_async(create_token)(user=operator, name="t")
    body = {"model": model.pk, "prompt": "hello"}

    response = await AsyncClient().post(
        "/api/runs",
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token.secret}"},
    )

    assert response.status_code == 503, response.content
    answer = response.json()
    assert "gpu-1 did not accept it" in answer["detail"]
    assert answer["run"]["error_code"] == Code.NO_NODE
    assert response["Retry-After"]


async def test_api_runs_names_the_node_in_its_header_and_body(model, operator):
    peer = await node("gpu-1", model)
    token = await sync_to_async(create_token)(user=operator, name="t")

    async def agent() -> None:
        await peer.answer(await peer.next(), "hi")

    script = asyncio.ensure_future(agent())
    response = await AsyncClient().post(
        "/api/runs",
        {"model": model.pk, "prompt": "hello"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token.secret}"},
    )
    await script

    assert response.status_code == 200, response.content
    assert response["X-OpsDash-Node"] == "gpu-1"
    assert response.json()["node"] == "gpu-1" and response.json()["text"] == "hi"


# ----------------------------------------------------------------------------- /v1


@pytest.fixture
async def v1_headers() -> dict[str, str]:
    flow = await Workflow.objects.acreate(name="Flow", slug="flow")
    issued = await sync_to_async(create_api_key)(workflow=flow, name="k", user=None)
    return {"Authorization": f"Bearer {issued.secret}"}


async def test_v1_with_no_node_answers_503_model_not_loaded_naming_why(model, v1_headers):
    body = {"model": model.slug, "messages": [{"role": "user", "content": "hi"}]}

    response = await AsyncClient().post(
        "/v1/chat/completions", body, content_type="application/json", headers=v1_headers
    )

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_not_loaded" and error["type"] == "server_error"
    assert "is not deployed to any node" in error["message"]


async def test_a_v1_stream_names_its_node_in_the_headers_before_the_first_text(model, v1_headers):
    peer = await node("gpu-1", model)
    body = {"model": model.slug, "prompt": "hello", "stream": True}

    async def agent() -> None:
        await peer.answer(await peer.next(), "Hel", "lo")

    script = asyncio.ensure_future(agent())
    response = await AsyncClient().post(
        "/v1/completions", body, content_type="application/json", headers=v1_headers
    )
    assert response.status_code == 200
    assert response["X-OpsDash-Node"] == "gpu-1"
    text = "".join(await _sse_texts(response.streaming_content))
    await script

    assert text == "Hello"


async def test_v1_failing_over_is_invisible_to_the_client(model, v1_headers, quick_failover):
    await node("gpu-1", model)  # never answers
    second = await node("gpu-2", model, queue_length=1)
    body = {"model": model.slug, "prompt": "hello"}

    async def agent() -> None:
        await second.answer(await second.next(), "served")

    script = asyncio.ensure_future(agent())
    response = await AsyncClient().post(
        "/v1/completions", body, content_type="application/json", headers=v1_headers
    )
    await script

    assert response.status_code == 200, response.content
    assert response["X-OpsDash-Node"] == "gpu-2"
    assert response.json()["choices"][0]["text"] == "served"


async def _sse_texts(chunks: AsyncIterator[bytes]) -> list[str]:
    texts = []
    async for chunk in chunks:
        for line in chunk.decode().splitlines():
            if line.startswith("data: {"):
                texts.extend(c.get("text", "") for c in json.loads(line[6:])["choices"])
    return texts


# ----------------------------------------------------------------------------- the real link


@pytest.fixture
def no_sweeper() -> Iterator[None]:
    """Enrolling in fleet mode starts this process's health sweep; it stops with the test."""
    yield
    health.stop_sweeper()


def _enroll_token() -> str:
    _, secret = fleet_services.create_node_token(name="routing", user=None)
    return secret


def _approve_and_place(name: str, model: LocalModel) -> None:
    node = fleet_services.approve_node(node=Node.objects.get(name=name), user=None)
    Placement.objects.create(model=model, node=node, status=PlacementStatus.READY)


async def test_a_run_reaches_a_real_agent_socket_through_the_hubs_consumer(model, no_sweeper):
    from opsdash.asgi import application

    socket = WebsocketCommunicator(application, protocol.AGENT_PATH)
    assert (await socket.connect())[0]
    token = await sync_to_async(_enroll_token)()
    hello = protocol.encode(protocol.HELLO, name="gpu-9", version="0.1.0", facts={}, token=token)
    await socket.send_to(text_data=hello)
    assert protocol.decode(await socket.receive_from(timeout=5))["type"] == protocol.WELCOME
    await sync_to_async(_approve_and_place)("gpu-9", model)
    run = await started(model)

    execution = asyncio.ensure_future(execute_run(run))
    while (generate := protocol.decode(await socket.receive_from(timeout=5)))["type"] != (
        protocol.GENERATE
    ):
        pass  # the approval's status message comes first
    for event in ({"type": "accepted"}, {"type": "token", "text": "via the link"}, DONE):
        fields = {"request_id": generate["request_id"], "reply_to": generate["reply_to"]}
        await socket.send_to(text_data=protocol.encode(protocol.EVENT, **fields, event=event))
    final = await asyncio.wait_for(execution, 20)
    await socket.disconnect()

    assert (final.status, final.output, final.node) == (RunStatus.OK, "via the link", "gpu-9")
    assert final.completion_tokens == DONE["completion_tokens"]
