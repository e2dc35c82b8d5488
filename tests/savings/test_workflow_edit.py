"""Workflows that cannot be mistyped: the baseline picked from the price book, the edit page,
archive and restore (issue 12, section 1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.core.models import AuditEntry
from opsdash.runs.models import Workflow
from opsdash.runs.services import RunRefused, RunRequest, start_run
from opsdash.runs.workflows import WorkflowRefused, archive_workflow, create_workflow
from opsdash.savings.models import CostingChange, RunCost
from opsdash.savings.services import CostingRefused, set_workflow_costing
from opsdash.savings.templatetags.baseline_picker import baseline_choices
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db

UNPRICED = "openai/gpt-9 has no price in the price book; pick one of its priced models"


def test_a_baseline_with_no_price_is_refused_with_a_sentence_naming_the_prices_page() -> None:
    flow = workflow("drafts")
    with pytest.raises(CostingRefused, match=UNPRICED) as refused:
        set_workflow_costing(
            workflow=flow, baseline_provider="OpenAI", baseline_model=" GPT-9 ", user=None
        )
    assert "Prices page" in refused.value.reason
    with pytest.raises(CostingRefused, match="pick a priced provider and model"):
        set_workflow_costing(
            workflow=flow, baseline_provider="nobody", baseline_model="x", user=None
        )
    assert not CostingChange.objects.exists()
    with pytest.raises(CostingRefused, match=UNPRICED):
        create_workflow(
            name="Mail",
            slug="mail",
            description="",
            baseline_provider="openai",
            baseline_model="gpt-9",
            user=None,
        )
    assert not Workflow.objects.filter(slug="mail").exists()


def test_a_priced_baseline_is_normalised_as_the_price_book_names_it() -> None:
    flow = create_workflow(
        name="Mail",
        slug="mail",
        description="",
        baseline_provider=" OpenAI ",
        baseline_model="GPT-4o-mini",
        user=None,
    )
    assert (flow.baseline_provider, flow.baseline_model) == ("openai", "gpt-4o-mini")
    none = create_workflow(
        name="Notes",
        slug="notes",
        description="",
        baseline_provider="",
        baseline_model="",
        user=None,
    )
    assert (none.baseline_provider, none.baseline_model) == ("", "")  # still a legal choice


def test_the_picker_lists_priced_models_by_provider_with_their_current_price() -> None:
    now = timezone.now()
    price("acme", "chat-1", "1.20", "4", start=now - timedelta(days=1))
    price("acme", "retired", "1", "1", start=now - timedelta(days=9), end=now - timedelta(days=1))
    groups = {g.provider: g for g in baseline_choices()}
    assert [o.label for o in groups["acme"].options] == [
        "chat-1 — $1.20 in / $4.00 out per 1M tokens"
    ]
    mini = {o.model: o.label for o in groups["openai"].options}["gpt-4o-mini"]
    assert mini == "gpt-4o-mini — $0.15 in / $0.60 out per 1M tokens"


def test_the_create_form_on_the_gateway_page_is_a_picker_not_free_text(as_admin: Client) -> None:
    html = as_admin.get("/gateway/").content.decode()
    assert '<select id="new-workflow-provider" name="baseline_provider"' in html
    assert '<optgroup label="openai" data-provider="openai">' in html
    assert "gpt-4o-mini — $0.15 in / $0.60 out per 1M tokens" in html
    assert 'name="baseline_model" maxlength' not in html
    assert "js/baseline.js" in html


def test_an_admin_edits_a_workflow_and_the_change_applies_from_then_on(
    as_admin: Client, admin
) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    price("acme", "cheap", "1", "1", start=now - timedelta(days=30))
    price("acme", "dear", "10", "10", start=now - timedelta(days=30))
    flow = workflow("drafts", "acme", "cheap", name="Drafts")
    model = local_model()
    before = finished_run(flow, model, started_at=now - timedelta(days=2))

    page = as_admin.get("/savings/workflows/drafts/edit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<option value="cheap" selected>' in html and "js/baseline.js" in html
    response = as_admin.post(
        "/savings/workflows/drafts/edit/",
        {
            "name": "Drafting",
            "description": "Letters to customers",
            "baseline_provider": "acme",
            "baseline_model": "dear",
            "electricity_usd_per_kwh": "0.36",
            "note": "moved to the big model",
        },
        follow=True,
    )
    assert "earlier runs keep their figures" in response.content.decode()
    after = finished_run(flow, model)

    costs = {c.run_id: c for c in RunCost.objects.all()}
    assert costs[before.pk].avoided_nusd == 1500 * 1000  # $1/Mtok, frozen
    assert costs[after.pk].avoided_nusd == 1500 * 10_000
    assert costs[after.pk].electricity_nusd_per_kwh == 360_000_000
    flow.refresh_from_db()
    assert (flow.name, flow.description, flow.baseline_model) == (
        "Drafting",
        "Letters to customers",
        "dear",
    )
    change = CostingChange.objects.filter(workflow=flow).latest("effective_from")
    assert (change.changed_by, change.note) == (admin, "moved to the big model")
    updates = AuditEntry.objects.filter(action="workflow.update", target_label="drafts")
    renamed = next(e for e in updates if isinstance(e.detail, dict))
    assert renamed.detail == {
        "before": {"name": "Drafts", "description": ""},
        "after": {"name": "Drafting", "description": "Letters to customers"},
    }
    assert renamed.actor == admin
    assert any("baseline acme/dear" in str(e.detail) for e in updates)


def test_the_edit_page_refuses_an_unpriced_baseline_and_changes_nothing(
    as_admin: Client,
) -> None:
    flow = workflow("drafts", "openai", "gpt-4o-mini", name="Drafts")
    response = as_admin.post(
        "/savings/workflows/drafts/edit/",
        {"name": "Renamed", "baseline_provider": "openai", "baseline_model": "gpt-9"},
    )
    assert response.status_code == 400
    assert UNPRICED in response.content.decode()
    flow.refresh_from_db()
    assert (flow.name, flow.baseline_model) == ("Drafts", "gpt-4o-mini")
    assert not CostingChange.objects.exists()
    assert not AuditEntry.objects.filter(action="workflow.update").exists()


def test_renaming_a_workflow_whose_old_baseline_lost_its_price_keeps_it(as_admin: Client) -> None:
    flow = workflow("legacy", "acme", "typo-model", name="Legacy")
    page = as_admin.get("/savings/workflows/legacy/edit/").content.decode()
    assert "typo-model — no price in the book now" in page
    response = as_admin.post(
        "/savings/workflows/legacy/edit/",
        {"name": "Legacy bot", "baseline_provider": "acme", "baseline_model": "typo-model"},
    )
    assert response.status_code == 302
    flow.refresh_from_db()
    assert (flow.name, flow.baseline_model) == ("Legacy bot", "typo-model")
    assert not CostingChange.objects.exists()


def test_the_workflow_page_shows_the_costing_and_an_edit_button_for_admins_only(
    as_admin: Client, as_manager: Client
) -> None:
    workflow("drafts", "openai", "gpt-4o-mini", name="Drafts")
    admin_html = as_admin.get("/savings/workflows/drafts/").content.decode()
    assert 'href="/savings/workflows/drafts/edit/"' in admin_html
    assert "<code>openai/gpt-4o-mini</code>" in admin_html
    assert 'name="baseline_model"' not in admin_html  # no free-text form left on the page
    manager_html = as_manager.get("/savings/workflows/drafts/").content.decode()
    assert "<code>openai/gpt-4o-mini</code>" in manager_html
    assert "/edit/" not in manager_html
    assert as_manager.get("/savings/workflows/drafts/edit/").status_code == 403
    assert as_manager.post("/savings/workflows/drafts/archive/").status_code == 403


def test_archiving_refuses_new_runs_keeps_the_history_and_restoring_undoes_it(
    as_admin: Client, admin
) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("drafts", "openai", "gpt-4o-mini", name="Drafts")
    model = local_model()
    finished_run(flow, model)
    request = RunRequest(model_id=model.pk, prompt="hi", workflow="drafts")

    assert as_admin.post("/savings/workflows/drafts/archive/").status_code == 302
    flow.refresh_from_db()
    assert flow.is_archived
    with pytest.raises(RunRefused, match="The workflow drafts is archived; restore it") as refused:
        start_run(request=request, user=admin, source="api")
    assert refused.value.status == 409
    history = as_admin.get("/savings/workflows/drafts/").content.decode()
    assert 'data-testid="archived"' in history and "$0.00045" in history  # its savings stay
    assert "drafts" not in {w["slug"] for w in as_admin.get("/api/workflows").json()["items"]}
    gateway = as_admin.get("/gateway/").content.decode()
    assert "/gateway/workflows/drafts/" not in gateway and "Show archived workflows" in gateway
    assert "/gateway/workflows/drafts/" in as_admin.get("/gateway/?archived=1").content.decode()
    assert 'value="drafts"' not in as_admin.get("/playground/").content.decode()

    assert as_admin.post("/savings/workflows/drafts/restore/").status_code == 302
    flow.refresh_from_db()
    assert not flow.is_archived
    assert start_run(request=request, user=admin, source="api").workflow == flow
    actions = list(
        AuditEntry.objects.filter(
            target_label="drafts", action__in=["workflow.archive", "workflow.restore"]
        ).values_list("action", "actor")
    )
    assert sorted(actions) == [("workflow.archive", admin.pk), ("workflow.restore", admin.pk)]


def test_the_playground_workflow_cannot_be_archived(as_admin: Client) -> None:
    from opsdash.runs.services import default_workflow

    playground = default_workflow()
    with pytest.raises(WorkflowRefused, match="playground workflow cannot be archived"):
        archive_workflow(workflow=playground, user=None)
    page = as_admin.get("/savings/workflows/playground/edit/").content.decode()
    assert "cannot be archived" in page and 'data-testid="archive"' not in page
    assert as_admin.post("/savings/workflows/playground/archive/", follow=True).status_code == 200
    playground.refresh_from_db()
    assert not playground.is_archived
