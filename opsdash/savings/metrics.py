"""Savings figures for Prometheus, all time, per workflow, from the same aggregation as the pages.

``SavingsCollector`` is a ``prometheus_client`` collector: whoever serves ``/metrics`` registers it
next to its own (the telemetry app does not import savings; it can take collectors from a
setting). Prometheus samples are floats, so these are for graphs and alerts; the exact
nano-dollar figures stay in the API and the CSV.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsdash.runs.models import Workflow
from opsdash.savings.money import NANO_PER_USD
from opsdash.savings.reports import aggregate

METRICS = (
    ("opsdash_savings_avoided_usd", "API spend avoided by local runs (list prices)", "avoided"),
    ("opsdash_savings_local_cost_usd", "Electricity cost of local runs", "local"),
    ("opsdash_savings_net_usd", "Avoided spend less local cost, priced runs", "net"),
    ("opsdash_savings_energy_joules", "Energy used by local runs", "energy"),
    ("opsdash_savings_runs", "Finalized runs", "runs"),
    ("opsdash_savings_unpriced_runs", "Runs whose baseline had no price", "unpriced"),
)


class SavingsCollector(Collector):
    """Every family carries ``host`` (the host that answered the scrape), as the telemetry
    families do, so one Prometheus can tell several OpsDash installs apart."""

    def __init__(self, host: str | None = None) -> None:
        self._host = host or str(settings.TELEMETRY_HOST)

    def collect(self) -> Iterator[Metric]:
        totals = aggregate(start=date.min, end=date.max, by=("workflow",))
        slugs = dict(Workflow.objects.values_list("pk", "slug"))
        families = {
            key: GaugeMetricFamily(name, doc, labels=["host", "workflow"])
            for name, doc, key in METRICS
        }
        for (workflow_id,), figures in totals.items():
            labels = [self._host, slugs.get(workflow_id, str(workflow_id))]
            families["avoided"].add_metric(labels, figures.avoided_nusd / NANO_PER_USD)
            families["local"].add_metric(labels, figures.local_nusd / NANO_PER_USD)
            families["net"].add_metric(labels, figures.net_nusd / NANO_PER_USD)
            families["energy"].add_metric(labels, figures.energy_mj / 1000)
            families["runs"].add_metric(labels, figures.runs)
            families["unpriced"].add_metric(labels, figures.unpriced_runs)
        yield from families.values()
