"""What the run ledger tells other apps in aggregate (telemetry's ``/metrics``)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Sum

from opsdash.runs.models import Run


def run_totals() -> list[dict[str, Any]]:
    """Runs and tokens by node, model slug and status: ``node, model__slug, status, runs,
    prompt_tokens, completion_tokens`` (``node`` blank for runs from before nodes were
    recorded)."""
    rows = (
        Run.objects.values("node", "model__slug", "status")
        .annotate(
            runs=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("node", "model__slug", "status")
    )
    return [dict(row) for row in rows]
