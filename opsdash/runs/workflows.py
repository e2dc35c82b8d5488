"""Workflows: created by admins (page or ``POST /api/workflows``), audited as ``workflow.create``.

A change of a workflow's baseline or electricity price is ``savings.services.change_costing``
(audited as ``workflow.update``), since it decides how the workflow's runs are costed.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from opsdash.core.audit import Target, record
from opsdash.runs.models import Workflow


@transaction.atomic
def create_workflow(
    *,
    name: str,
    slug: str,
    description: str,
    baseline_provider: str,
    baseline_model: str,
    user: AbstractBaseUser | AnonymousUser | None,
) -> Workflow:
    workflow = Workflow.objects.create(
        name=name.strip(),
        slug=slug,
        description=description,
        baseline_provider=baseline_provider,
        baseline_model=baseline_model,
    )
    record(
        actor=user,
        action="workflow.create",
        target=Target.of(workflow, type="workflow", label=workflow.slug),
        detail={"baseline": f"{baseline_provider or '—'}/{baseline_model or '—'}"},
    )
    return workflow
