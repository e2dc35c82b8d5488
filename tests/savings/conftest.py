"""Savings fixtures: no energy counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsdash.savings import catalogue
from opsdash.telemetry import energy


@pytest.fixture(autouse=True)
def no_energy_counters() -> Iterator[None]:
    """Each test starts on a host without energy counters (like this machine and CI), unless it
    hands savings a sampler of its own; nothing leaks from one test's sampler to the next."""
    energy.use_sampler(None)
    yield
    energy.use_sampler()


@pytest.fixture
def seeded_prices(db) -> None:  # type: ignore[no-untyped-def]
    """The genai-prices rows the data migration writes (transactional tests lose them)."""
    from opsdash.savings.models import Price

    if not Price.objects.filter(source="genai-prices").exists():
        catalogue.seed_prices(Price)
