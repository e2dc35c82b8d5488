"""Other apps' Prometheus collectors served on ``/metrics`` beside telemetry's own (savings).

A registration is a factory called once per scrape, so each scrape reads fresh figures.
Error policy (said again where each is registered): a collector that raises fails the scrape
with a 500 and a logged traceback: Prometheus marks the target down rather than storing a
partial set of figures.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.registry import Collector

from opsdash.core.registry import Registry

CollectorFactory = Callable[[], Collector]

collectors: Registry[CollectorFactory] = Registry("metrics collectors")


def extra_collectors() -> list[Collector]:
    return [factory() for factory in collectors.entries()]
