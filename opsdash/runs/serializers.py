"""The JSON shapes of runs and workflows, shared by ``/api/`` and the pages and sockets.

One place per shape, so the API, the playground socket and any page cannot drift apart; the
field names are the stable surface in DESIGN.md.
"""

from __future__ import annotations

from typing import Any

from opsdash.runs.models import Run, Workflow


def run_json(run: Run) -> dict[str, Any]:
    """The stable run shape (DESIGN.md), plus what the pages show."""
    return {
        "id": run.pk,
        "text": run.output,
        "status": run.status,
        "error": run.error,
        "error_code": run.error_code,
        "finish_reason": run.finish_reason,
        "model": run.model_id,
        "workflow": run.workflow.slug if run.workflow_id else None,
        "source": run.source,
        "node": run.node,
        "usage": {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens},
        "timings": {
            "ttft_ms": run.ttft_ms,
            "tokens_per_second": run.tokens_per_second,
            "total_ms": run.total_ms,
        },
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    """The stable workflow shape (DESIGN.md)."""
    return {
        "name": workflow.name,
        "slug": workflow.slug,
        "description": workflow.description,
        "baseline_provider": workflow.baseline_provider,
        "baseline_model": workflow.baseline_model,
        "archived": workflow.is_archived,
        "archived_at": workflow.archived_at.isoformat() if workflow.archived_at else None,
    }
