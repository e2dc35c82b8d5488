"""/v1 under budgets and rate limits, with the real tiny model: OpenAI's 429s, the
``Retry-After`` of the real minute, the ``x-ratelimit-*`` headers, and the refused call as a run
row in the ledger."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from opsdash.limits.services import BudgetSpec, set_limits
from opsdash.runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


def headers(api_key) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {api_key.secret}"}


async def call(api_key, model, *, stream: bool = False):  # type: ignore[no-untyped-def]
    body = {"model": model.slug, "prompt": "hello", "max_tokens": 2, "stream": stream}
    return await AsyncClient().post(
        "/v1/completions", body, content_type="application/json", headers=headers(api_key)
    )


def wait_for_a_fresh_minute_half() -> None:
    """Start where the rest of the minute outlasts the test, so one window holds it."""
    while time.time() % 60 > 40:
        time.sleep(0.5)


async def test_over_its_requests_per_minute_a_key_gets_openais_429_with_retry_after(
    tiny_model, api_key
):
    await sync_to_async(set_limits)(
        key=api_key.key, budget=None, requests_per_minute=2, tokens_per_minute=None, user=None
    )
    await sync_to_async(wait_for_a_fresh_minute_half)()
    first, second = await call(api_key, tiny_model), await call(api_key, tiny_model)
    assert first.status_code == second.status_code == 200, (first.content, second.content)
    assert first["x-ratelimit-limit-requests"] == "2"
    assert [first["x-ratelimit-remaining-requests"], second["x-ratelimit-remaining-requests"]] == [
        "1",
        "0",
    ]
    assert first["x-ratelimit-reset-requests"].endswith("s")

    third = await call(api_key, tiny_model, stream=True)

    assert third.status_code == 429, third.content
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "2 requests per minute" in error["message"]
    retry = int(third["Retry-After"])
    assert 1 <= retry <= 60 and abs(retry - (60 - time.time() % 60)) <= 2
    run = await Run.objects.select_related("workflow").aget(pk=int(third["X-OpsDash-Run"]))
    assert (run.status, run.error_code, run.source) == (
        RunStatus.ERROR,
        "rate_limit_exceeded",
        "gateway",
    )
    assert run.workflow_id == api_key.key.workflow_id and run.model_id == tiny_model.pk
    assert run.error == error["message"] and run.finished_at is not None
    assert await Run.objects.acount() == 3, "each call is one run, the refused one included"


async def test_a_used_up_hard_budget_is_insufficient_quota_without_retry_after(tiny_model, api_key):
    await sync_to_async(set_limits)(
        workflow=api_key.key.workflow,
        budget=BudgetSpec(window="day", tokens=1),
        requests_per_minute=None,
        tokens_per_minute=None,
        user=None,
    )
    assert (await call(api_key, tiny_model)).status_code == 200  # 0 of 1 used: allowed

    refused = await call(api_key, tiny_model)

    assert refused.status_code == 429, refused.content
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "daily budget" in error["message"] and "resets at" in error["message"]
    assert "Retry-After" not in refused
    assert "x-ratelimit-limit-requests" not in refused
    run = await Run.objects.aget(pk=int(refused["X-OpsDash-Run"]))
    assert (run.status, run.error_code) == (RunStatus.ERROR, "insufficient_quota")


async def test_without_limits_answers_carry_no_rate_limit_headers(tiny_model, api_key):
    answer = await call(api_key, tiny_model)
    assert answer.status_code == 200
    assert "x-ratelimit-limit-requests" not in answer
