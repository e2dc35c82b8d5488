"""/ws/playground/ through the real ASGI app and a real runner on the tiny model."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from opsdash.runs.models import Run, RunStatus
from tests.fixtures.websockets import ws_as

pytestmark = pytest.mark.django_db(transaction=True)

#: More tokens than a test waits for: ``endless_model`` never writes its end token and holds
#: 262,144 tokens of context, so a run asked for these goes on until it is stopped.
ENDLESS_TOKENS = 100_000


async def connected(user: User | None) -> WebsocketCommunicator:
    return await ws_as(user, "/ws/playground/")


async def next_not_status(communicator: WebsocketCommunicator) -> dict:  # type: ignore[type-arg]
    """The next message other than a ``status`` (loading / running, on a first run)."""
    while (message := await communicator.receive_json_from(timeout=30))["type"] == "status":
        pass
    return message


async def collect(
    communicator: WebsocketCommunicator, panel: str = "main"
) -> tuple[list[str], dict]:
    tokens: list[str] = []
    while True:
        message = await communicator.receive_json_from(timeout=60)
        if message.get("panel") != panel:
            continue
        if message["type"] == "token":
            tokens.append(message["text"])
        elif message["type"] in {"done", "error"}:
            return tokens, message


async def test_an_operator_streams_tokens_and_gets_the_final_figures(operator, tiny_model):
    ws = await connected(operator)
    connected_ok, _ = await ws.connect()
    assert connected_ok
    await ws.send_json_to(
        {
            "type": "run",
            "model": tiny_model.pk,
            "prompt": "hello world",
            "params": {"max_tokens": 12, "seed": 1, "temperature": 0},
        }
    )
    started = await ws.receive_json_from(timeout=30)
    assert started["type"] == "started"
    tokens, done = await collect(ws)
    await ws.disconnect()

    assert len(tokens) >= 2, "the answer arrives in pieces, not at once"
    assert done["type"] == "done" and done["status"] == "ok"
    assert done["text"] == "".join(tokens)
    assert done["usage"]["completion_tokens"] == 12 and done["usage"]["prompt_tokens"] > 0
    assert done["timings"]["ttft_ms"] > 0 and done["timings"]["tokens_per_second"] > 0
    run = await Run.objects.aget(pk=started["run"])
    assert run.status == RunStatus.OK and run.output == done["text"] and run.user_id == operator.pk


async def test_a_first_run_says_loading_model_then_running_and_a_second_says_neither(
    operator, tiny_model
):
    ws = await connected(operator)
    await ws.connect()
    run = {"type": "run", "model": tiny_model.pk, "prompt": "hello", "params": {"max_tokens": 4}}

    kinds = []
    for _ in range(2):
        await ws.send_json_to(run)
        seen = []
        while (message := await ws.receive_json_from(timeout=60))["type"] != "done":
            seen.append(message.get("state") or message["type"])
        assert message["status"] == "ok"
        kinds.append(seen)
    await ws.disconnect()

    first, second = kinds
    # The model loads on first use: said before anything else, and "running" before any text.
    assert first[:3] == ["started", "loading", "running"], first
    assert set(first[3:]) == {"token"}, first
    assert second[0] == "started" and set(second[1:]) == {"token"}, second


async def test_stop_cancels_within_a_token_and_keeps_the_text(operator, endless_model):
    ws = await connected(operator)
    await ws.connect()
    await ws.send_json_to(
        {
            "type": "run",
            "model": endless_model.pk,
            "prompt": "hello",
            "params": {"max_tokens": ENDLESS_TOKENS, "temperature": 0},
        }
    )
    started = await ws.receive_json_from(timeout=30)
    first = await next_not_status(ws)
    assert first["type"] == "token"
    await ws.send_json_to({"type": "stop", "panel": "main"})
    tokens, done = await collect(ws)
    await ws.disconnect()

    assert done["status"] == "cancelled" and done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < ENDLESS_TOKENS
    run = await Run.objects.aget(pk=started["run"])
    assert run.status == RunStatus.CANCELLED and run.output.startswith(first["text"])


async def test_closing_the_socket_records_the_run_as_cancelled(operator, endless_model):
    ws = await connected(operator)
    await ws.connect()
    params = {"max_tokens": ENDLESS_TOKENS}
    await ws.send_json_to(
        {"type": "run", "model": endless_model.pk, "prompt": "hello", "params": params}
    )
    started = await ws.receive_json_from(timeout=30)
    assert (await next_not_status(ws))["type"] == "token"
    await ws.disconnect()

    run = await Run.objects.aget(pk=started["run"])
    assert run.status == RunStatus.CANCELLED and run.output


async def test_bad_requests_are_refused_with_a_reason_and_write_no_run(operator, tiny_model):
    ws = await connected(operator)
    await ws.connect()
    cases = [
        ({"prompt": "   "}, "empty"),
        ({"prompt": "hi", "params": {"temperature": -1}}, "temperature"),
        ({"prompt": "hi", "params": {"max_tokens": 10**9}}, "max_tokens"),
        ({"prompt": "hi", "model": 999999}, "no model"),
    ]
    for extra, words in cases:
        await ws.send_json_to({"type": "run", "model": tiny_model.pk, **extra})
        reply = await ws.receive_json_from(timeout=10)
        assert reply["type"] == "error" and words in reply["reason"].lower(), reply
    await ws.disconnect()
    assert await Run.objects.acount() == 0


async def test_a_prompt_longer_than_the_context_is_a_recorded_error(operator, tiny_model):
    ws = await connected(operator)
    await ws.connect()
    await ws.send_json_to({"type": "run", "model": tiny_model.pk, "prompt": "hello " * 9000})
    await ws.receive_json_from(timeout=30)
    _, done = await collect(ws)
    await ws.disconnect()
    assert done["status"] == "error" and "context" in done["error"].lower()


async def test_two_panels_stream_at_once(operator, tiny_model, tiny_gpt2_model):
    gpt2 = tiny_gpt2_model
    ws = await connected(operator)
    await ws.connect()
    for panel, model in (("a", tiny_model.pk), ("b", gpt2.pk)):
        await ws.send_json_to(
            {
                "type": "run",
                "panel": panel,
                "model": model,
                "prompt": "hello",
                "params": {"max_tokens": 8},
            }
        )
    finals = {}
    while len(finals) < 2:
        message = await ws.receive_json_from(timeout=60)
        if message["type"] == "done":
            finals[message["panel"]] = message
    await ws.disconnect()
    assert {m["status"] for m in finals.values()} == {"ok"}
    assert finals["a"]["model"] == tiny_model.pk and finals["b"]["model"] == gpt2.pk


@pytest.mark.parametrize("persona", ["anonymous", "manager", "outsider"])
async def test_people_without_the_operator_right_cannot_connect(persona, request):
    from asgiref.sync import sync_to_async

    user = None if persona == "anonymous" else await sync_to_async(request.getfixturevalue)(persona)
    ws = await connected(user)
    ok, code = await ws.connect()
    assert not ok and code == 4403


async def test_a_frame_that_is_not_a_json_object_gets_an_error_and_the_socket_stays_open(
    operator, tiny_model
):
    ws = await connected(operator)
    await ws.connect()
    frames: list[dict] = [  # type: ignore[type-arg]
        {"text_data": "not json"},
        {"text_data": "{broken"},
        {"bytes_data": b'{"type": "run"}'},
        {"text_data": "[1, 2]"},
        {"text_data": "[" * 5000 + "]" * 5000},
        {"text_data": f'{{"type": "run", "model": {tiny_model.pk}, "prompt": "hi \\ud800"}}'},
    ]
    for frame in frames:
        await ws.send_to(**frame)
        reply = await ws.receive_json_from(timeout=10)
        assert reply["type"] == "error" and reply["reason"], (frame, reply)

    # Still open, and still working: a good request is served on the same socket.
    await ws.send_json_to(
        {"type": "run", "model": tiny_model.pk, "prompt": "hello", "params": {"max_tokens": 3}}
    )
    assert (await ws.receive_json_from(timeout=30))["type"] == "started"
    _, done = await collect(ws)
    assert done["status"] == "ok"
    await ws.disconnect()


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt": 5},
        {"prompt": ["hi"]},
        {"prompt": None, "messages": "hi"},
        {"prompt": None, "messages": ["hi"]},
        {"prompt": "hi", "params": {"stop": 5}},
    ],
    ids=repr,
)
async def test_a_run_with_fields_of_the_wrong_type_is_refused_for_its_panel(
    operator, tiny_model, extra
):
    ws = await connected(operator)
    await ws.connect()
    await ws.send_json_to({"type": "run", "panel": "b", "model": tiny_model.pk, **extra})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "error" and reply["panel"] == "b" and reply["reason"], reply
    await ws.send_json_to({"type": "stop", "panel": "b"})
    assert await ws.receive_nothing(timeout=0.2), "the socket is open and quiet"
    await ws.disconnect()
    assert await Run.objects.acount() == 0
