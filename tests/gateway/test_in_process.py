"""The gateway inside Django's own async test client: no server, no thread per request."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from opsdash.runs.models import Run, RunStatus

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
