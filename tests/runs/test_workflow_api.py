"""``/api/workflows``: create with a priced baseline, PATCH, archive and restore (issue 12, §1)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from opsdash.core.models import AuditEntry
from opsdash.gateway.services import create_api_key
from opsdash.runs.models import Workflow
from opsdash.savings.models import CostingChange
from tests.factories import workflow

pytestmark = pytest.mark.django_db


def _patch(client: Client, slug: str, body: dict[str, Any]) -> Any:
    return client.patch(f"/api/workflows/{slug}", body, content_type="application/json")


def test_creating_a_workflow_with_an_unpriced_baseline_answers_422_with_a_sentence(
    as_admin: Client,
) -> None:
    body = {"name": "Mail", "baseline_provider": "openai", "baseline_model": "gpt-9"}
    response = as_admin.post("/api/workflows", body, content_type="application/json")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("openai/gpt-9 has no price in the price book;")
    assert "Prices page" in detail
    assert not Workflow.objects.filter(slug="mail").exists()
    half = {"name": "Mail", "baseline_provider": "openai"}
    refused = as_admin.post("/api/workflows", half, content_type="application/json")
    assert (
        refused.status_code == 422 and "both the provider and the model" in refused.json()["detail"]
    )


def test_patch_changes_only_what_it_names_and_a_baseline_from_then_on(
    as_admin: Client, admin
) -> None:  # type: ignore[no-untyped-def]
    workflow("drafts", "openai", "gpt-4o-mini", name="Drafts")
    renamed = _patch(as_admin, "drafts", {"name": "Drafting"})
    assert renamed.status_code == 200
    assert renamed.json() | {"archived_at": None} == {
        "name": "Drafting",
        "slug": "drafts",
        "description": "",
        "baseline_provider": "openai",
        "baseline_model": "gpt-4o-mini",
        "archived": False,
        "archived_at": None,
    }
    assert not CostingChange.objects.exists()  # the baseline was not named: untouched

    moved = _patch(
        as_admin,
        "drafts",
        {"baseline_model": "GPT-4o", "electricity_usd_per_kwh": "0.25", "note": "bigger"},
    )
    assert moved.status_code == 200 and moved.json()["baseline_model"] == "gpt-4o"
    change = CostingChange.objects.latest("effective_from")
    assert (change.baseline_provider, change.baseline_model) == ("openai", "gpt-4o")
    assert (change.electricity_nusd_per_kwh, change.note, change.changed_by) == (
        250_000_000,
        "bigger",
        admin,
    )
    again = _patch(as_admin, "drafts", {"description": "Letters"})
    assert again.status_code == 200
    # The electricity override stays when the body leaves it out.
    assert CostingChange.objects.count() == 2
    update = AuditEntry.objects.filter(action="workflow.update", detail__has_key="before")
    assert [e.detail["after"] for e in update.order_by("id")] == [
        {"name": "Drafting"},
        {"description": "Letters"},
    ]


def test_patch_refuses_an_unpriced_baseline_and_an_unknown_workflow(as_admin: Client) -> None:
    workflow("drafts", "openai", "gpt-4o-mini", name="Drafts")
    refused = _patch(as_admin, "drafts", {"name": "X", "baseline_model": "gpt-9"})
    assert refused.status_code == 422
    assert "openai/gpt-9 has no price in the price book" in refused.json()["detail"]
    assert Workflow.objects.get(slug="drafts").name == "Drafts"  # nothing of it applied
    bad_power = _patch(as_admin, "drafts", {"electricity_usd_per_kwh": "-1"})
    assert bad_power.status_code == 422 and "cannot be negative" in bad_power.json()["detail"]
    missing = _patch(as_admin, "nope", {"name": "X"})
    assert missing.status_code == 404 and missing.json()["detail"] == "There is no workflow “nope”."
    empty = _patch(as_admin, "drafts", {"name": "  "})
    assert empty.status_code == 422 and empty.json()["detail"] == "Give the workflow a name."


def test_archive_and_restore_through_the_api_and_the_lists(as_admin: Client) -> None:
    workflow("drafts", name="Drafts")
    archived = as_admin.post("/api/workflows/drafts/archive")
    assert archived.status_code == 200
    assert archived.json()["archived"] is True and archived.json()["archived_at"]
    assert as_admin.post("/api/workflows/drafts/archive").status_code == 409
    active = as_admin.get("/api/workflows").json()
    assert "drafts" not in [w["slug"] for w in active["items"]]
    listed = as_admin.get("/api/workflows?archived=true").json()
    assert [w["slug"] for w in listed["items"]] == ["drafts"] and listed["count"] == 1

    restored = as_admin.post("/api/workflows/drafts/restore")
    assert restored.status_code == 200 and restored.json()["archived"] is False
    again = as_admin.post("/api/workflows/drafts/restore")
    assert again.status_code == 409 and "is not archived" in again.json()["detail"]
    assert "drafts" in [w["slug"] for w in as_admin.get("/api/workflows").json()["items"]]
    assert as_admin.post("/api/workflows/nope/archive").status_code == 404


def test_the_playground_workflow_cannot_be_archived_through_the_api(as_admin: Client) -> None:
    from opsdash.runs.services import default_workflow

    default_workflow()
    response = as_admin.post("/api/workflows/playground/archive")
    assert response.status_code == 409
    assert "playground workflow cannot be archived" in response.json()["detail"]


def test_managers_read_workflows_but_only_admins_change_them(
    as_manager: Client, as_operator: Client
) -> None:
    workflow("drafts", name="Drafts")
    assert as_manager.get("/api/workflows?archived=true").status_code == 200
    for client in (as_manager, as_operator):
        assert _patch(client, "drafts", {"name": "X"}).status_code == 403
        assert client.post("/api/workflows/drafts/archive").status_code == 403
        assert client.post("/api/workflows/drafts/restore").status_code == 403
    assert Client().post("/api/workflows/drafts/archive").status_code == 401
    assert Workflow.objects.get(slug="drafts").archived_at is None


def test_the_schema_declares_every_status_of_the_new_operations(as_admin: Client) -> None:
    paths = as_admin.get("/api/openapi.json").json()["paths"]
    assert set(paths["/api/workflows/{slug}"]["patch"]["responses"]) >= {
        "200",
        "400",
        "401",
        "403",
        "404",
        "413",
        "422",
    }
    for verb in ("archive", "restore"):
        declared = paths[f"/api/workflows/{{slug}}/{verb}"]["post"]["responses"]
        assert set(declared) >= {"200", "401", "403", "404", "409"}


@pytest.mark.django_db(transaction=True)
async def test_an_archived_workflows_keys_get_openais_401_naming_the_archive() -> None:
    flow = await sync_to_async(workflow)("drafts", name="Drafts")
    issued = await sync_to_async(create_api_key)(workflow=flow, name="n8n", user=None)
    headers = {"Authorization": f"Bearer {issued.secret}"}
    client = AsyncClient()
    assert (await client.get("/v1/models", headers=headers)).status_code == 200

    from opsdash.runs.workflows import archive_workflow, restore_workflow

    await sync_to_async(archive_workflow)(workflow=flow, user=None)
    refused = await client.get("/v1/models", headers=headers)
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
    assert "belongs to the workflow drafts, which is archived" in error["message"]

    await sync_to_async(restore_workflow)(workflow=flow, user=None)
    assert (await client.get("/v1/models", headers=headers)).status_code == 200
