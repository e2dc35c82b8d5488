"""/api/workflows/{slug}/limits, /api/keys/{id}/limits and the budgets' state, for scripts.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.

``PUT …/limits`` replaces every limit (a null or missing field clears it) and answers what
``GET …/budget`` answers, so a script sees the effect at once.
"""

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, DbId, responses
from opsdash.gateway.models import WorkflowKey
from opsdash.limits import services
from opsdash.runs.models import Workflow

router = Router(tags=["limits"])


class BudgetIn(Schema):
    window: str = Field(description="day, week or month (in OPSDASH_REPORT_TIME_ZONE)")
    tokens: int | None = Field(None, description="prompt + completion tokens in the window")
    usd: str | None = Field(None, description="avoided USD in the window, a decimal string")
    hard: bool = Field(True, description="refuse gateway calls once used up (else only alert)")


class LimitsIn(Schema):
    budget: BudgetIn | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    alert_percents: list[int] | None = Field(
        None, description="percents of the budget that alert (default 50, 80, 100)"
    )


class UsedOut(Schema):
    tokens: int | None
    usd: str | None


class BudgetOut(Schema):
    window: str
    hard: bool
    tokens: int | None
    usd: str | None
    used: UsedOut
    left: UsedOut
    percent: float
    starts_at: str
    resets_at: str


class LimitsOut(Schema):
    budget: BudgetOut | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    alert_percents: list[int]


def _workflow(slug: str) -> Workflow:
    return get_object_or_404(Workflow, slug=slug)


def _key(pk: int) -> WorkflowKey:
    return get_object_or_404(WorkflowKey.objects.select_related("workflow"), pk=pk)


def _set(request: HttpRequest, payload: LimitsIn, **owner: Any) -> dict[str, Any]:
    budget = payload.budget
    try:
        services.set_limits(
            **owner,
            budget=(
                None
                if budget is None
                else services.BudgetSpec(
                    window=budget.window, tokens=budget.tokens, usd=budget.usd, hard=budget.hard
                )
            ),
            requests_per_minute=payload.requests_per_minute,
            tokens_per_minute=payload.tokens_per_minute,
            alert_percents=payload.alert_percents,
            user=request.user,  # type: ignore[arg-type]
        )
    except services.LimitsRefused as exc:
        # A body that fits the schema but not the rules is still the body's fault: 422.
        raise HttpError(422, f"{exc.param}: {exc.reason}" if exc.param else exc.reason) from exc
    return services.limits_json(**owner)


@router.put(
    "/workflows/{slug}/limits",
    response=responses({200: LimitsOut}, *BODY_STATUSES, 404),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def put_workflow_limits(request: HttpRequest, slug: str, payload: LimitsIn) -> dict[str, Any]:
    """Replace the workflow's budget and rate limits (null clears one); audited."""
    return _set(request, payload, workflow=_workflow(slug))


@router.put(
    "/keys/{key_id}/limits",
    response=responses({200: LimitsOut}, *BODY_STATUSES, 404),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def put_key_limits(request: HttpRequest, key_id: DbId, payload: LimitsIn) -> dict[str, Any]:
    """Replace one workflow key's budget and rate limits (null clears one); audited."""
    return _set(request, payload, key=_key(key_id))


@router.get(
    "/workflows/{slug}/budget",
    response=responses({200: LimitsOut}, 404),
    auth=api_auth(Cap.VIEW_SAVINGS),
)
def workflow_budget(request: HttpRequest, slug: str) -> dict[str, Any]:
    """The budget's use in its current window (used, left, resets_at) and the rate limits."""
    return services.limits_json(workflow=_workflow(slug))


@router.get(
    "/keys/{key_id}/budget",
    response=responses({200: LimitsOut}, 404, 422),
    auth=api_auth(Cap.VIEW_SAVINGS),
)
def key_budget(request: HttpRequest, key_id: DbId) -> dict[str, Any]:
    """One key's budget use in its current window and its rate limits."""
    return services.limits_json(key=_key(key_id))
