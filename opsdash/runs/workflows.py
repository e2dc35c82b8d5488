"""Workflows: created, edited, archived and restored by admins (pages and ``/api/workflows``).

Audited as ``workflow.create``, ``workflow.update`` (with ``before`` / ``after``),
``workflow.archive`` and ``workflow.restore``.

What a workflow's runs are compared against (its baseline and electricity price) is the savings
app's: it checks a baseline against the price book and records a costing change from now on.
The runs app does not import savings (savings reads runs), so savings registers its side here in
``SavingsConfig.ready()`` as a ``WorkflowCosting``; the error policy is that a refusal from it
refuses the whole create or edit, nothing written.
"""

from __future__ import annotations

from typing import Protocol

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.core.registry import Registry
from opsdash.runs.models import Workflow
from opsdash.runs.services import PLAYGROUND_SLUG

Actor = AbstractBaseUser | AnonymousUser | None
MAX_NAME = 120


class WorkflowRefused(Refusal):
    """The workflow cannot be created, changed, archived or restored; ``reason`` says why."""


class WorkflowCosting(Protocol):
    """The savings app's side of a workflow (registered in ``SavingsConfig.ready()``)."""

    def clean_baseline(self, *, provider: str, model: str) -> tuple[str, str]:
        """The baseline as the price book names it; a ``Refusal`` (with a sentence) when it
        cannot be used, e.g. it has no price in effect. ``("", "")`` is no baseline."""
        ...

    def change_costing(
        self,
        *,
        workflow: Workflow,
        baseline_provider: str | None,
        baseline_model: str | None,
        electricity_usd_per_kwh: str | None,
        note: str,
        user: User | None,
    ) -> bool:
        """Apply a change of costing from now on (None: keep that part as it is); False when
        nothing differs from the costing in effect. Refuses before writing anything."""
        ...


costings: Registry[WorkflowCosting] = Registry("workflow costing")


def clean_baseline(*, provider: str, model: str) -> tuple[str, str]:
    """``provider`` / ``model`` checked and normalised by every registered costing."""
    cleaned = ((provider or "").strip().lower(), (model or "").strip().lower())
    for costing in costings.entries():
        cleaned = costing.clean_baseline(provider=cleaned[0], model=cleaned[1])
    return cleaned


def _user(user: Actor) -> User | None:
    return user if isinstance(user, User) else None


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise WorkflowRefused("Give the workflow a name.", param="name")
    if len(name) > MAX_NAME:
        raise WorkflowRefused(
            f"The name is {len(name)} characters; the limit is {MAX_NAME}.", param="name"
        )
    return name


def _target(workflow: Workflow) -> Target:
    return Target.of(workflow, type="workflow", label=workflow.slug)


@transaction.atomic
def create_workflow(
    *,
    name: str,
    slug: str,
    description: str,
    baseline_provider: str,
    baseline_model: str,
    user: Actor,
) -> Workflow:
    """A new workflow; a baseline with no price in effect is refused (``clean_baseline``)."""
    provider, model = clean_baseline(provider=baseline_provider, model=baseline_model)
    workflow = Workflow.objects.create(
        name=_clean_name(name),
        slug=slug,
        description=description,
        baseline_provider=provider,
        baseline_model=model,
    )
    record(
        actor=user,
        action="workflow.create",
        target=_target(workflow),
        detail={"baseline": f"{provider or '—'}/{model or '—'}"},
    )
    return workflow


def update_workflow(*, workflow: Workflow, name: str, description: str, user: Actor) -> Workflow:
    """Rename or re-describe the workflow; audited with what was and what is, when it changed.

    The slug stays: it is what scripts, ``/v1`` keys and saved links name the workflow by.
    """
    name = _clean_name(name)
    description = (description or "").strip()
    before = {"name": workflow.name, "description": workflow.description}
    after = {"name": name, "description": description}
    if before == after:
        return workflow
    with transaction.atomic():
        Workflow.objects.filter(pk=workflow.pk).update(name=name, description=description)
        workflow.name, workflow.description = name, description
        changed = [k for k in before if before[k] != after[k]]
        record(
            actor=user,
            action="workflow.update",
            target=_target(workflow),
            detail={
                "before": {k: before[k] for k in changed},
                "after": {k: after[k] for k in changed},
            },
        )
    return workflow


def edit_workflow(
    *,
    workflow: Workflow,
    user: Actor,
    name: str | None = None,
    description: str | None = None,
    baseline_provider: str | None = None,
    baseline_model: str | None = None,
    electricity_usd_per_kwh: str | None = None,
    note: str = "",
) -> bool:
    """What the edit page and ``PATCH /api/workflows/{slug}`` change, in one transaction.

    None leaves a field as it is. A costing change (baseline, electricity) applies to runs
    started from now on; a refused one refuses the whole edit. True when anything changed.
    """
    with transaction.atomic():
        changed = False
        for costing in costings.entries():
            changed |= costing.change_costing(
                workflow=workflow,
                baseline_provider=baseline_provider,
                baseline_model=baseline_model,
                electricity_usd_per_kwh=electricity_usd_per_kwh,
                note=note,
                user=_user(user),
            )
        if name is not None or description is not None:
            before = (workflow.name, workflow.description)
            update_workflow(
                workflow=workflow,
                name=workflow.name if name is None else name,
                description=workflow.description if description is None else description,
                user=user,
            )
            changed |= before != (workflow.name, workflow.description)
    return changed


def archive_workflow(*, workflow: Workflow, user: Actor) -> Workflow:
    """Hide the workflow from pickers and lists and refuse its new runs and ``/v1`` keys.

    Its runs and savings history stay as they are; ``restore_workflow`` undoes it.
    """
    if workflow.slug == PLAYGROUND_SLUG:
        raise WorkflowRefused(
            "The playground workflow cannot be archived: every playground and API run without "
            "a workflow is counted there.",
            code=Code.WRONG_STATUS,
        )
    with transaction.atomic():
        row = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if row.is_archived:
            raise WorkflowRefused(
                f"The workflow {row.slug} is already archived.", code=Code.WRONG_STATUS
            )
        row.archived_at = timezone.now()
        row.save(update_fields=["archived_at"])
        workflow.archived_at = row.archived_at
        record(
            actor=user,
            action="workflow.archive",
            target=_target(workflow),
            detail={"archived_at": row.archived_at.isoformat()},
        )
    return workflow


def restore_workflow(*, workflow: Workflow, user: Actor) -> Workflow:
    """Take the workflow back into use: it accepts runs and its unrevoked keys work again."""
    with transaction.atomic():
        row = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if not row.is_archived:
            raise WorkflowRefused(
                f"The workflow {row.slug} is not archived.", code=Code.WRONG_STATUS
            )
        since = row.archived_at
        row.archived_at = None
        row.save(update_fields=["archived_at"])
        workflow.archived_at = None
        record(
            actor=user,
            action="workflow.restore",
            target=_target(workflow),
            detail={"archived_since": since.isoformat() if since else None},
        )
    return workflow
