"""Savings fixtures: the runs app's model fixtures, a manager client, a fresh energy meter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from opsdash.savings import catalogue, energy
from tests.conftest import client_for
from tests.runs.conftest import smol_model, supervisor_cleanup, tiny_model  # noqa: F401


@pytest.fixture
def as_manager(manager: User) -> Client:
    return client_for(manager)


@pytest.fixture(autouse=True)
def no_energy_counters() -> Iterator[None]:
    """Each test starts with a meter that has no counters (like this machine and CI), unless it
    installs its own; nothing leaks from one test's meter to the next."""
    previous = energy.set_meter(energy.EnergyMeter([]))
    yield
    meter = energy.set_meter(previous)
    if meter is not None:
        meter.stop()


@pytest.fixture
def seeded_prices(db) -> None:  # type: ignore[no-untyped-def]
    """The genai-prices rows the data migration writes (transactional tests lose them)."""
    from opsdash.savings.models import Price

    if not Price.objects.filter(source="genai-prices").exists():
        catalogue.seed_prices(Price)
