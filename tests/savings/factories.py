"""Builders for savings tests: prices (models, workflows and runs are in tests/factories.py)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User

from opsdash.savings.models import Price, PriceSource
from opsdash.savings.pricebook import PriceInput, add_price
from tests.factories import finished_run, local_model, started_run, workflow

# Re-exported while tests still import them from here; new tests import tests.factories.
__all__ = ["finished_run", "local_model", "price", "started_run", "workflow"]


def price(
    provider: str,
    model: str,
    input_price: str,
    output_price: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    source: PriceSource = PriceSource.ADMIN,
    user: User | None = None,
) -> Price:
    return add_price(
        price=PriceInput(
            provider=provider,
            model=model,
            input_price=input_price,
            output_price=output_price,
            effective_from=start,
            effective_to=end,
        ),
        user=user,
        source=source,
    )
