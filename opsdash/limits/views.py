"""The limits pages: one edit form for a workflow's limits and one for a key's (admins), both
posting to ``set_limits``, the service the API calls."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.gateway.models import WorkflowKey
from opsdash.limits.models import DEFAULT_ALERT_PERCENTS, Limits, Window
from opsdash.limits.services import (
    BudgetSpec,
    LimitsRefused,
    budget_state,
    limits_of,
    set_limits,
    when_label,
)
from opsdash.runs.models import Workflow
from opsdash.savings.money import nano_to_decimal
from opsdash.typing import AuthedRequest


def _whole(data: QueryDict, name: str, what: str) -> int | None:
    raw = data.get(name, "").strip().replace(",", "").replace("_", "")
    if not raw:
        return None
    if not raw.isdigit():
        raise LimitsRefused(f"The {what} must be a whole number, not {raw!r}.", param=name)
    return int(raw)


def _percents(data: QueryDict) -> list[int] | None:
    raw = data.get("alert_percents", "").strip()
    if not raw:
        return list(DEFAULT_ALERT_PERCENTS)
    parts = [p.strip().rstrip("%").strip() for p in raw.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise LimitsRefused(
            f"Alert percents are whole numbers separated by commas, such as 50, 80, 100; "
            f"not {raw!r}.",
            param="alert_percents",
        )
    return [int(p) for p in parts]


def _initial(limits: Limits | None) -> dict[str, Any]:
    if limits is None:
        return {
            "budget_window": "",
            "budget_tokens": "",
            "budget_usd": "",
            "budget_hard": True,
            "requests_per_minute": "",
            "tokens_per_minute": "",
            "alert_percents": ", ".join(map(str, DEFAULT_ALERT_PERCENTS)),
        }
    return {
        "budget_window": limits.budget_window,
        "budget_tokens": limits.budget_tokens or "",
        "budget_usd": (
            f"{nano_to_decimal(limits.budget_nusd).normalize():f}" if limits.budget_nusd else ""
        ),
        "budget_hard": limits.budget_hard,
        "requests_per_minute": limits.requests_per_minute or "",
        "tokens_per_minute": limits.tokens_per_minute or "",
        "alert_percents": ", ".join(str(p) for p in limits.alert_percents),
    }


def _edit(
    request: AuthedRequest, *, workflow: Workflow | None, key: WorkflowKey | None, back: str
) -> HttpResponse:
    owner: dict[str, Any] = {"workflow": workflow} if workflow is not None else {"key": key}
    error, status = "", 200
    values = _initial(limits_of(**owner))
    if request.method == "POST":
        data = request.POST
        values = {name: data.get(name, "") for name in values} | {
            "budget_hard": data.get("budget_hard") == "on"
        }
        try:
            window = data.get("budget_window", "")
            set_limits(
                **owner,
                budget=(
                    BudgetSpec(
                        window=window,
                        tokens=_whole(data, "budget_tokens", "budget in tokens"),
                        usd=data.get("budget_usd", "").strip() or None,
                        hard=data.get("budget_hard") == "on",
                    )
                    if window
                    else None
                ),
                requests_per_minute=_whole(data, "requests_per_minute", "requests per minute"),
                tokens_per_minute=_whole(data, "tokens_per_minute", "tokens per minute"),
                alert_percents=_percents(data),
                user=request.user,
            )
        except LimitsRefused as exc:
            error, status = exc.reason, 400
        else:
            messages.success(request, "Limits saved; they apply to the next gateway call.")
            return redirect(back)
    state = budget_state(**owner)
    return render(
        request,
        "limits/edit.html",
        {
            "workflow": workflow or (key.workflow if key else None),
            "key": key,
            "values": values,
            "windows": Window.choices,
            "state": state,
            "resets_label": when_label(state.resets_at) if state else "",
            "error": error,
            "back": back,
        },
        status=status,
    )


@requires(Cap.MANAGE_WORKFLOWS)
@require_http_methods(["GET", "POST"])
def workflow_limits(request: AuthedRequest, slug: str) -> HttpResponse:
    """A workflow's budget and rate limits: they hold every key of the workflow together."""
    workflow = get_object_or_404(Workflow, slug=slug)
    return _edit(
        request, workflow=workflow, key=None, back=reverse("savings:workflow", args=[slug])
    )


@requires(Cap.MANAGE_WORKFLOWS)
@require_http_methods(["GET", "POST"])
def key_limits(request: AuthedRequest, pk: int) -> HttpResponse:
    """One key's own budget and rate limits, on top of its workflow's."""
    key = get_object_or_404(WorkflowKey.objects.select_related("workflow"), pk=pk)
    back = reverse("gateway:workflow", args=[key.workflow.slug])
    return _edit(request, workflow=None, key=key, back=back)
