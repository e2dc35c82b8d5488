"""``{% baseline_picker %}``: a workflow's baseline picked from the price book, never typed.

A provider ``<select>`` and a model ``<select>`` grouped by provider (``<optgroup>``), listing
only the models with a price in effect now, each with its current price. It works without
JavaScript; ``static/js/baseline.js`` narrows the model list to the chosen provider. An inclusion
tag rather than view context, so that any page with a workflow form (the gateway's create form,
the edit page) shows the same list without its app importing savings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django import template
from django.db.models import Q
from django.utils import timezone

from opsdash.savings.models import Price, PriceSource
from opsdash.savings.money import format_unit_price
from opsdash.savings.pricebook import normalize_model, normalize_provider

register = template.Library()


@dataclass(frozen=True)
class BaselineOption:
    model: str
    label: str


@dataclass
class ProviderGroup:
    provider: str
    options: list[BaselineOption] = field(default_factory=list)
    #: The current baseline, listed although the book has no price for it now (so that an edit
    #: of something else keeps it); picking it anew is refused.
    unpriced: bool = False


def price_label(model: str, input_nusd: int, output_nusd: int) -> str:
    return (
        f"{model} — {format_unit_price(input_nusd)} in / {format_unit_price(output_nusd)} out "
        "per 1M tokens"
    )


def baseline_choices(*, at: datetime | None = None) -> list[ProviderGroup]:
    """Every model with a price in effect at ``at`` (default now), by provider; where an admin
    row and a genai-prices row are both in effect, the admin's price is shown (it is the one
    runs are priced with)."""
    at = at or timezone.now()
    rows = (
        Price.objects.filter(effective_from__lte=at)
        .filter(Q(effective_to__isnull=True) | Q(effective_to__gt=at))
        .values_list("provider", "model", "source", "input_nusd_per_mtok", "output_nusd_per_mtok")
    )
    best: dict[tuple[str, str], tuple[bool, int, int]] = {}
    for provider, model, source, input_nusd, output_nusd in rows:
        admin = source == PriceSource.ADMIN
        if (provider, model) not in best or (admin and not best[provider, model][0]):
            best[provider, model] = (admin, input_nusd, output_nusd)
    groups: dict[str, ProviderGroup] = {}
    for (provider, model), (_, input_nusd, output_nusd) in sorted(best.items()):
        group = groups.setdefault(provider, ProviderGroup(provider))
        group.options.append(BaselineOption(model, price_label(model, input_nusd, output_nusd)))
    return list(groups.values())


@register.inclusion_tag("savings/_baseline_picker.html")
def baseline_picker(
    provider: str = "", model: str = "", prefix: str = "baseline"
) -> dict[str, Any]:
    """The two selects, ``baseline_provider`` and ``baseline_model``, with ``provider/model``
    selected; ``prefix`` keeps element ids apart when a page has two pickers."""
    provider, model = normalize_provider(provider), normalize_model(model)
    groups = baseline_choices()
    if provider and model:
        group = next((g for g in groups if g.provider == provider), None)
        if group is None:
            group = ProviderGroup(provider, unpriced=True)
            groups.append(group)
        if model not in {o.model for o in group.options}:
            group.options.append(BaselineOption(model, f"{model} — no price in the book now"))
    return {"groups": groups, "provider": provider, "model": model, "prefix": prefix}
