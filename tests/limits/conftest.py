"""Limits fixtures: a priced workflow with a key, and runs written the way the gateway writes
them (a run plus its gateway call), finalized through ``runs.services`` so every finalizer
(savings' pricing, limits' counting) runs for real."""

from __future__ import annotations

from datetime import datetime

import pytest

from opsdash.catalog.models import LocalModel
from opsdash.gateway.models import Endpoint, GatewayCall, WorkflowKey
from opsdash.gateway.services import IssuedKey, create_api_key
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.services import finish_run
from tests import factories
from tests.savings.factories import price

#: $1,000 in and $2,000 out per million tokens: 1,000 + 500 tokens avoid exactly $2.00.
PRICE_IN, PRICE_OUT = "1000", "2000"


@pytest.fixture
def workflow(db) -> Workflow:  # type: ignore[no-untyped-def]
    price("acme", "big-model", PRICE_IN, PRICE_OUT, start=datetime(2020, 1, 1).astimezone())
    return factories.workflow("invoices", "acme", "big-model", name="Invoices")


@pytest.fixture
def api_key(workflow: Workflow) -> IssuedKey:
    return create_api_key(workflow=workflow, name="n8n", user=None)


@pytest.fixture
def key(api_key: IssuedKey) -> WorkflowKey:
    return api_key.key


@pytest.fixture
def ledger_model(db) -> LocalModel:  # type: ignore[no-untyped-def]
    return factories.local_model("ledger-model")


def gateway_run(
    key: WorkflowKey,
    model: LocalModel,
    *,
    prompt_tokens: int = 1000,
    completion_tokens: int = 500,
    started_at: datetime | None = None,
) -> Run:
    """A finished gateway run of ``key``: the run, its gateway call, then ``finish_run``."""
    run = Run.objects.create(
        model=model, workflow=key.workflow, source=RunSource.GATEWAY, prompt="hi"
    )
    if started_at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=started_at)
    GatewayCall.objects.create(run=run, key=key, endpoint=Endpoint.CHAT)
    return finish_run(
        run_id=run.pk,
        status=RunStatus.OK,
        output="ok",
        usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    )
