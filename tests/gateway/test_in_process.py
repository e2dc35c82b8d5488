"""The gateway inside Django's own async test client: no server, no thread per request."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from opsdash.runs.models import Run, RunStatus
from opsdash.runs.runtime import get_supervisor

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_handler_without_a_thread_sensitive_context_still_gets_its_answer(
    tiny_model, api_key
):
    # Django's AsyncClient runs the sync middleware on asgiref's one shared thread, which then
    # waits for the view: a run finalized on that same thread would never finish.
    client, key = AsyncClient(), {"Authorization": f"Bearer {api_key.secret}"}
    body = {"model": tiny_model.slug, "prompt": "hello", "max_tokens": 3}
    for _ in range(3):
        response = await asyncio.wait_for(
            client.post("/v1/completions", body, content_type="application/json", headers=key),
            timeout=30,
        )
        assert response.status_code == 200, response.content
        assert response.json()["usage"]["completion_tokens"] == 3
    statuses = await sync_to_async(lambda: list(Run.objects.values_list("status", flat=True)))()
    assert statuses == [RunStatus.OK] * 3


async def test_a_body_over_the_size_limit_gets_413_in_openais_shape(tiny_model, api_key):
    body = {"model": tiny_model.slug, "prompt": "x" * 3_000_000}
    response = await AsyncClient().post(
        "/v1/completions",
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_key.secret}"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def key_header(api_key) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {api_key.secret}"}


@pytest.mark.parametrize(
    ("path", "field", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hello " * 3000}]},
            "messages",
        ),
        ("/v1/completions", {"prompt": "hello " * 3000}, "prompt"),
    ],
)
async def test_a_prompt_longer_than_the_context_answers_context_length_exceeded(
    tiny_model, api_key, path, field, param
):
    for stream in (False, True):
        response = await AsyncClient().post(
            path,
            {"model": tiny_model.slug, "stream": stream} | field,
            content_type="application/json",
            headers=key_header(api_key),
        )
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert "maximum context length" in error["message"], "the words clients look for too"
        run = await Run.objects.aget(pk=int(response["X-OpsDash-Run"]))
        assert run.status == RunStatus.ERROR and run.source == "gateway"


async def test_a_legacy_ggml_model_reports_its_context_overflow_with_the_same_code(
    api_key, tiny_ggml_path, model_root, supervisor_cleanup
):
    from tests.fixtures.models import install_ready

    gpt2 = await sync_to_async(install_ready)(tiny_ggml_path, model_root, model_type="gpt2")
    assert gpt2.backend == "ctransformers"
    response = await AsyncClient().post(
        "/v1/completions",
        {"model": gpt2.slug, "prompt": "hello " * 3000},
        content_type="application/json",
        headers=key_header(api_key),
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


async def test_every_body_and_chunk_names_the_backend_build_as_a_string_fingerprint(
    tiny_model, api_key
):
    client = AsyncClient()
    whole = await client.post(
        "/v1/chat/completions",
        {
            "model": tiny_model.slug,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
        },
        content_type="application/json",
        headers=key_header(api_key),
    )
    fingerprint = whole.json()["system_fingerprint"]
    assert isinstance(fingerprint, str) and tiny_model.backend in fingerprint

    streamed = await client.post(
        "/v1/completions",
        {
            "model": tiny_model.slug,
            "prompt": "hello",
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        content_type="application/json",
        headers=key_header(api_key),
    )
    body = b"".join([piece async for piece in streamed.streaming_content])  # type: ignore[attr-defined]
    events = [line[6:] for line in body.split(b"\n\n") if line.startswith(b"data: {")]
    assert len(events) >= 3
    assert {json.loads(e)["system_fingerprint"] for e in events} == {fingerprint}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/"),
        ("GET", "/v1/models/a/b"),
        ("DELETE", "/v1/fine_tuning/jobs/ftjob-1"),  # /v1/files is the Batch API's
    ],
)
def test_an_unknown_path_under_v1_is_openais_404_json_not_a_page(client, method, path):
    response = client.generic(method, path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "message": f"Invalid URL ({method} {path}).",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


async def test_a_generation_a_server_shutdown_ends_answers_503_with_retry_after(
    endless_model, api_key
):
    body = {"model": endless_model.slug, "prompt": "hello", "max_tokens": 200_000}
    request = asyncio.ensure_future(
        AsyncClient().post(
            "/v1/completions", body, content_type="application/json", headers=key_header(api_key)
        )
    )
    supervisor, deadline = get_supervisor(), time.monotonic() + 60
    while [s.state for s in supervisor.status()] != ["busy"]:
        assert time.monotonic() < deadline, "the generation never started"
        assert not request.done(), request.result().content
        await asyncio.sleep(0.02)
    supervisor.interrupt()  # what the server's stop signal does
    response = await asyncio.wait_for(request, timeout=30)

    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "2"
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "server_shutting_down"
    run = await Run.objects.aget(pk=int(response["X-OpsDash-Run"]))
    assert run.status == RunStatus.INTERRUPTED
