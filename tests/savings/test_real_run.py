"""A real generation on the tiny GGUF model, through POST /api/runs, is priced as it finishes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from opsdash.accounts.services import create_token
from opsdash.savings.days import report_day
from opsdash.savings.models import DailyRollup, EnergySource, RunCost
from tests.savings.factories import price, workflow

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_real_run_on_the_tiny_model_is_priced_when_finalized(
    client, operator, tiny_model
) -> None:  # type: ignore[no-untyped-def]
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=timezone.now() - timedelta(days=1))
    workflow("support-bot", "openai", "gpt-4o-mini")
    secret = create_token(user=operator, name="t").secret
    response = client.post(
        "/api/runs",
        {
            "model": tiny_model.pk,
            "prompt": "hello world",
            "max_tokens": 6,
            "workflow": "support-bot",
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    prompt_tokens, completion_tokens = (
        body["usage"]["prompt_tokens"],
        body["usage"]["completion_tokens"],
    )
    assert prompt_tokens > 0 and completion_tokens == 6

    cost = RunCost.objects.select_related("run", "price").get(run_id=body["id"])
    assert cost.priced and cost.price.model == "gpt-4o-mini"
    assert cost.avoided_nusd == round(prompt_tokens * 150 + completion_tokens * 600)
    assert cost.run.cpu_seconds is not None and cost.run.cpu_seconds > 0
    assert cost.energy_source == EnergySource.ESTIMATED  # no RAPL or NVML on this machine
    watts_times_seconds = Decimal(str(cost.run.cpu_seconds)) * 10 * 1000
    assert cost.energy_mj == int(watts_times_seconds.to_integral_value())
    assert cost.net_nusd == cost.avoided_nusd - cost.local_nusd

    rollup = DailyRollup.objects.get(day=report_day(cost.run.started_at))
    assert (rollup.runs, rollup.ok_runs, rollup.prompt_tokens) == (1, 1, prompt_tokens)
    assert rollup.avoided_nusd == cost.avoided_nusd and rollup.energy_mj == cost.energy_mj
