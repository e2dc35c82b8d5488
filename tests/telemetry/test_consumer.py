"""/ws/telemetry/ through the real ASGI app, the real channel layer and the real sampler."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import sync_to_async

from opsdash.telemetry import sampler as sampler_module
from tests.telemetry.conftest import telemetry_socket

pytestmark = pytest.mark.django_db(transaction=True)

ACK = {"type": "ack"}


async def until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


async def next_frame(ws, timeout: float = 3.0) -> dict:  # type: ignore[no-untyped-def]
    """The next message, acknowledged."""
    message = json.loads(await ws.receive_from(timeout=timeout))
    await ws.send_json_to(ACK)
    return message


async def opened(user):  # type: ignore[no-untyped-def]
    ws = await telemetry_socket(user)
    connected, code = await ws.connect()
    assert connected, code
    return ws


async def test_a_page_gets_history_then_a_frame_every_tick(operator):
    ws = await opened(operator)

    history = await next_frame(ws)
    frames = [await next_frame(ws) for _ in range(5)]
    await ws.disconnect()

    assert history["type"] == "history" and isinstance(history["frames"], list)
    assert all(f["type"] == "frame" and f["host"] == "testhost" for f in frames)
    times = [f["t"] for f in frames]
    assert times == sorted(set(times)), "each frame is a new tick"
    # One frame per 100 ms tick; a loaded machine makes ticks late, never much early.
    assert 50 <= (times[-1] - times[0]) / 4 <= 1000, "about one frame per 100 ms tick"
    assert frames[-1]["gpu_state"] in {"ok", "no_library", "no_driver", "no_devices"} or frames[-1][
        "gpu_state"
    ].startswith("error: ")
    assert frames[-1]["cpu"]["percent"], "CPU telemetry goes on whatever NVML says"


async def test_history_fills_the_charts_of_a_page_opened_later(operator):
    first = await opened(operator)
    await next_frame(first)
    for _ in range(8):
        await next_frame(first)

    later = await opened(operator)
    history = await next_frame(later)
    await first.disconnect()
    await later.disconnect()

    assert len(history["frames"]) >= 8
    sample = history["frames"][-1]
    assert {"t", "cpu", "memory", "disk", "net", "gpus"} <= set(sample)
    assert "percent" not in sample["cpu"], "history frames are the light ones"


async def test_two_pages_get_the_very_same_frame(operator, admin):
    a = await opened(operator)
    b = await opened(admin)
    await next_frame(a)
    await next_frame(b)

    seen_a, seen_b = {}, {}
    for _ in range(6):  # both pages read as they come
        frame_a, frame_b = await asyncio.gather(next_frame(a), next_frame(b))
        seen_a[frame_a["t"]], seen_b[frame_b["t"]] = frame_a, frame_b
    await a.disconnect()
    await b.disconnect()

    common = set(seen_a) & set(seen_b)
    assert len(common) >= 3
    assert all(seen_a[t] == seen_b[t] for t in common)


async def test_a_page_that_never_reads_costs_one_message_and_is_closed_after_the_stall_limit(
    operator, settings
):
    settings.TELEMETRY_STALL_SECONDS = 0.6
    reader = await opened(operator)
    stuck = await opened(operator)  # never acknowledges anything
    await next_frame(reader)

    for _ in range(4):  # 0.4 s: four frames went out to the reader meanwhile
        await next_frame(reader)
    assert stuck.output_queue.qsize() == 1, "only the history: later frames replace each other"

    close = None
    for _ in range(30):
        await next_frame(reader)
        if stuck.output_queue.qsize() > 1:
            stuck.output_queue.get_nowait()  # the history
            close = stuck.output_queue.get_nowait()
            break
    assert close == {"type": "websocket.close", "code": 4408}
    assert stuck.output_queue.qsize() == 0
    frame = await next_frame(reader)
    assert frame["type"] == "frame", "the other page keeps streaming"
    await reader.disconnect()


async def test_one_sampler_however_many_pages_are_open(operator):
    sockets = [await opened(operator) for _ in range(6)]
    for ws in sockets:
        await next_frame(ws)
        await next_frame(ws)

    threads = [t for t in threading.enumerate() if t.name == "opsdash-telemetry-sampler"]
    assert sampler_module.starts == 1 and len(threads) == 1
    for ws in sockets:
        await ws.disconnect()


async def test_a_slow_page_skips_to_the_latest_frame(operator):
    ws = await opened(operator)
    await next_frame(ws)
    unacked = json.loads(await ws.receive_from(timeout=3))  # a frame, not acknowledged yet
    sampler = sampler_module.get_sampler()
    start = sampler.ticks
    await until(lambda: sampler.ticks >= start + 5)  # five ticks pass
    newest = sampler.latest()

    await ws.send_json_to(ACK)
    caught_up = await next_frame(ws)
    await ws.disconnect()

    assert newest is not None and newest["t"] > unacked["t"]
    # A replayed backlog would send the tick right after the unacknowledged one. The frame
    # waiting for the ack is the newest the page was sent, which on a loaded machine may be a
    # tick behind the sampler's own newest, but never that next tick.
    ticks = sorted(json.loads(frame)["t"] for frame in sampler.history_frames())
    next_tick = min(t for t in ticks if t > unacked["t"])
    assert next_tick < caught_up["t"] <= newest["t"] + 1000, "a current frame, no backlog replayed"


@pytest.mark.parametrize("persona", ["manager", "outsider"])
async def test_people_without_telemetry_rights_are_refused(persona, request):
    user = await sync_to_async(request.getfixturevalue)(persona)
    ws = await telemetry_socket(user)
    connected, code = await ws.connect()
    assert (connected, code) == (False, 4403)


async def test_anonymous_visitors_are_refused():
    ws = await telemetry_socket(None)
    connected, _ = await ws.connect()
    assert not connected
