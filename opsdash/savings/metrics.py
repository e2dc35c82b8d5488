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
from opsdash.savings.reports import Figures, aggregate

METRICS = (
    ("opsdash_savings_avoided_usd", "API spend avoided by local runs (list prices)", "avoided"),
    ("opsdash_savings_local_cost_usd", "Electricity cost of local runs", "local"),
    ("opsdash_savings_net_usd", "Avoided spend less local cost, priced runs", "net"),
    ("opsdash_savings_energy_joules", "Energy used by local runs", "energy"),
    ("opsdash_savings_runs", "Finalized runs", "runs"),
    ("opsdash_savings_unpriced_runs", "Runs whose baseline had no price", "unpriced"),
)


class SavingsCollector(Collector):
    """Every family carries ``host``: the node that served the runs (``Run.node``, kept in the
    rollups), as the telemetry families do, so one scrape of a hub reports each node's savings.
    Runs from before nodes were recorded count under ``host`` (default: this host's
    ``OPSDASH_TELEMETRY_HOST``), the host that kept the ledger then."""

    def __init__(self, host: str | None = None) -> None:
        self._host = host or str(settings.TELEMETRY_HOST)

    def collect(self) -> Iterator[Metric]:
        slugs = dict(Workflow.objects.values_list("pk", "slug"))
        # Summed per label set: unrecorded runs and that host's own recorded ones share one series.
        totals: dict[tuple[str, str], Figures] = {}
        grouped = aggregate(start=date.min, end=date.max, by=("workflow", "node"))
        for (workflow_id, node), figures in grouped.items():
            key = (node or self._host, slugs.get(workflow_id, str(workflow_id)))
            totals.setdefault(key, Figures()).add(figures)
        families = {
            key: GaugeMetricFamily(name, doc, labels=["host", "workflow"])
            for name, doc, key in METRICS
        }
        for (host, workflow), figures in totals.items():
            labels = [host, workflow]
            families["avoided"].add_metric(labels, figures.avoided_nusd / NANO_PER_USD)
            families["local"].add_metric(labels, figures.local_nusd / NANO_PER_USD)
            families["net"].add_metric(labels, figures.net_nusd / NANO_PER_USD)
            families["energy"].add_metric(labels, figures.energy_mj / 1000)
            families["runs"].add_metric(labels, figures.runs)
            families["unpriced"].add_metric(labels, figures.unpriced_runs)
        yield from families.values()
