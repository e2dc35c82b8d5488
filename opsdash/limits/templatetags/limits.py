"""``{% budget_card workflow %}`` for the workflow's savings page and ``{% key_limits key %}``
for each key row on the gateway page: both read ``opsdash.limits.services``, the same figures
``GET /api/…/budget`` answers."""

from __future__ import annotations

from typing import Any

from django import template

from opsdash.gateway.models import WorkflowKey
from opsdash.limits.services import WINDOW_WORDS, budget_state, limits_of, when_label
from opsdash.runs.models import Workflow

register = template.Library()


def _can_manage(context: template.Context) -> bool:
    return "manage_workflows" in (context.get("caps") or set())


@register.inclusion_tag("limits/_budget_card.html", takes_context=True)
def budget_card(context: template.Context, workflow: Workflow) -> dict[str, Any]:
    limits = limits_of(workflow=workflow)
    state = budget_state(workflow=workflow)
    return {
        "workflow": workflow,
        "limits": limits,
        "state": state,
        "window_word": WINDOW_WORDS.get(state.window, "") if state else "",
        "resets_label": when_label(state.resets_at) if state else "",
        "can_manage": _can_manage(context),
    }


@register.inclusion_tag("limits/_key_limits.html", takes_context=True)
def key_limits(context: template.Context, key: WorkflowKey) -> dict[str, Any]:
    state = budget_state(key=key)
    return {
        "key": key,
        "limits": limits_of(key=key),
        "state": state,
        "window_word": WINDOW_WORDS.get(state.window, "") if state else "",
        "resets_label": when_label(state.resets_at) if state else "",
        "can_manage": _can_manage(context),
    }
