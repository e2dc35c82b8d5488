"""Builders for test data, shared by every test folder: models, workflows and runs.

Rows are written the way the app writes them (runs are finalized through ``runs.services``, so
the finalizers registered by other apps, such as savings' pricing, run too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.services import finish_run


def local_model(name: str = "tiny-llama", **fields: Any) -> LocalModel:
    """A ``ready`` catalog row with no file behind it: enough for pages, prices and ledgers.
    A test that generates uses the ``tiny_model`` fixture instead."""
    return LocalModel.objects.create(
        name=name,
        slug=name,
        status=ModelStatus.READY,
        source_kind=SourceKind.PATH,
        source_ref=f"/models/{name}.gguf",
        **fields,
    )


def workflow(slug: str, provider: str = "", model: str = "", name: str | None = None) -> Workflow:
    return Workflow.objects.create(
        name=name or slug.replace("-", " ").title(),
        slug=slug,
        baseline_provider=provider,
        baseline_model=model,
    )


def started_run(flow: Workflow, model: LocalModel, *, started_at: datetime | None = None) -> Run:
    run = Run.objects.create(model=model, workflow=flow, source=RunSource.API, prompt="hi")
    if started_at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=started_at)  # auto_now_add otherwise
        run.refresh_from_db()
    return run


def finished_run(
    flow: Workflow,
    model: LocalModel,
    *,
    started_at: datetime | None = None,
    prompt_tokens: int = 1000,
    completion_tokens: int = 500,
    status: RunStatus = RunStatus.OK,
    cpu_seconds: float | None = 2.0,
    total_ms: float | None = 1500.0,
    **usage: Any,
) -> Run:
    """A run written and finalized through ``runs.services`` (so the pricing finalizer runs)."""
    run = started_run(flow, model, started_at=started_at)
    return finish_run(
        run_id=run.pk,
        status=status,
        output="ok",
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cpu_seconds": cpu_seconds,
            "total_ms": total_ms,
            **usage,
        },
    )
