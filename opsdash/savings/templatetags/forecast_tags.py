"""``{% month_forecast workflow node as forecast %}`` for ``savings/_forecast.html``.

The overview and workflow pages include the partial; the tag reads the forecast itself so the
include stays one line on each page and the views (and their tests) need no new context.
"""

from __future__ import annotations

from django import template

from opsdash.runs.models import Workflow
from opsdash.savings.forecast import Forecast, forecast

register = template.Library()


@register.simple_tag
def month_forecast(workflow: Workflow | None = None, node: str = "") -> Forecast:
    return forecast(workflow=workflow if isinstance(workflow, Workflow) else None, node=node or "")
