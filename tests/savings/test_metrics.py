"""The savings collector renders per-workflow figures in Prometheus text format."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest

from opsdash.savings.metrics import SavingsCollector
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db


def test_the_collector_exposes_avoided_spend_per_workflow_labelled_by_host(settings) -> None:
    settings.TELEMETRY_HOST = "node-a"
    price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=1))
    finished_run(workflow("drafts", "acme", "chat-1"), local_model())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SavingsCollector())
    text = generate_latest(registry).decode()
    assert 'opsdash_savings_avoided_usd{host="node-a",workflow="drafts"} 0.002' in text
    assert 'opsdash_savings_runs{host="node-a",workflow="drafts"} 1.0' in text
    assert 'opsdash_savings_energy_joules{host="node-a",workflow="drafts"} 20.0' in text
