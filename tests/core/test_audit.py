"""The one audit log: what admins and managers do is in it, it only grows, and admins read it
on the Audit page and from ``GET /api/audit`` with the same filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from opsdash.core import audit
from opsdash.core.models import AuditEntry, AuditImmutable
from opsdash.gateway.models import WorkflowKey
from opsdash.runs.models import Workflow

pytestmark = pytest.mark.django_db


def _api(client: Client, **params: str) -> dict:  # type: ignore[type-arg]
    response = client.get("/api/audit", params)
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def flow(db) -> Workflow:  # type: ignore[no-untyped-def]
    return Workflow.objects.create(name="Drafts", slug="drafts")


def test_creating_and_revoking_a_gateway_key_appear_in_the_api(as_admin: Client, flow) -> None:  # type: ignore[no-untyped-def]
    as_admin.post(f"/gateway/workflows/{flow.slug}/keys/", {"name": "zapier"})
    key = WorkflowKey.objects.get(workflow=flow)
    as_admin.post(f"/gateway/keys/{key.pk}/revoke/")

    body = _api(as_admin, action="key")

    assert body["count"] == 2
    revoked, created = body["items"]
    assert (created["action"], revoked["action"]) == ("key.create", "key.revoke")
    for item in body["items"]:
        assert item["actor"] == "ada" and item["outcome"] == "ok"
        assert item["target"]["type"] == "key" and item["target"]["id"] == str(key.pk)
        assert "zapier" in item["target"]["label"] and key.prefix in item["target"]["label"]
    assert created["detail"] == {"workflow": "drafts", "prefix": key.prefix}
    assert set(created) == {"at", "actor", "action", "target", "outcome", "detail"}


def test_adding_a_price_appears_in_the_api(as_admin: Client) -> None:
    as_admin.post(
        "/savings/prices/add/",
        {"provider": "acme", "model": "chat-7", "input_price": "1.20", "output_price": "4"},
    )

    (item,) = _api(as_admin, action="price.add")["items"]

    assert (item["actor"], item["target"]["type"], item["target"]["label"]) == (
        "ada",
        "price",
        "acme/chat-7",
    )
    assert "acme/chat-7" in item["detail"]


def test_changing_a_threshold_appears_in_the_api(as_admin: Client) -> None:
    form = {"gpu_temperature": "85", "gpu_memory": "95", "ram": "42", "ram_on": "on"}
    form |= {"disk_free_gib": "3"}
    assert as_admin.post("/telemetry/thresholds", form).status_code == 302

    (item,) = _api(as_admin, action="threshold")["items"]

    assert (item["action"], item["actor"]) == ("threshold.update", "ada")
    assert item["detail"]["ram"] == {"threshold": 42.0, "enabled": True}
    assert item["detail"]["gpu_temperature"]["enabled"] is False


def test_creating_a_workflow_and_unlocking_a_user_and_tokens_are_audited(
    as_admin: Client, admin: User
) -> None:
    created = as_admin.post("/api/workflows", {"name": "Mail"}, content_type="application/json")
    assert created.status_code == 201
    as_admin.post("/accounts/tokens/", {"name": "ci"})
    token = admin.api_tokens.get()  # type: ignore[attr-defined]
    as_admin.post(f"/accounts/tokens/{token.pk}/revoke/")
    as_admin.post("/accounts/lockouts/", {"username": "grace"})

    actions = [item["action"] for item in _api(as_admin)["items"]]

    assert actions == ["user.unlock", "token.revoke", "token.create", "workflow.create"]


def test_the_filters_narrow_the_entries(as_admin: Client, admin: User) -> None:
    audit.record(actor=None, action="savings.recompute", outcome="failed")
    audit.record(actor=admin, action="model.retire", target=audit.Target("model", "7", "tiny"))
    audit.record(actor=admin, action="model.install", outcome="refused", detail="no such file")
    audit.record(actor=admin, action="modelling.other")  # a prefix is a dotted one, not a word

    assert _api(as_admin)["count"] == 4
    assert _api(as_admin, action="model")["count"] == 2
    assert _api(as_admin, action="model.retire")["items"][0]["target"] == {
        "type": "model",
        "id": "7",
        "label": "tiny",
    }
    assert _api(as_admin, actor="system")["items"][0]["action"] == "savings.recompute"
    assert _api(as_admin, actor="ada")["count"] == 3
    assert _api(as_admin, target_type="model")["count"] == 1
    assert _api(as_admin, outcome="refused")["items"][0]["detail"] == "no such file"
    today = timezone.localdate().isoformat()
    assert _api(as_admin, **{"from": today, "to": today})["count"] == 4
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert _api(as_admin, **{"from": tomorrow})["count"] == 0
    assert _api(as_admin, limit="1", offset="1")["count"] == 4
    assert len(_api(as_admin, limit="1", offset="1")["items"]) == 1


def test_a_bad_filter_is_refused_with_a_sentence(as_admin: Client) -> None:
    response = as_admin.get("/api/audit", {"outcome": "maybe"})
    assert response.status_code == 400 and "ok, refused, failed" in response.json()["detail"]
    reversed_range = as_admin.get("/api/audit", {"from": "2026-02-02", "to": "2026-01-01"})
    assert reversed_range.status_code == 400 and "reversed" in reversed_range.json()["detail"]
    page = as_admin.get("/audit/", {"from": "yesterday"})
    assert page.status_code == 400 and "YYYY-MM-DD" in page.content.decode()


@pytest.mark.parametrize("persona", ["operator", "manager"])
def test_operators_and_managers_may_not_read_the_audit_log(persona: str, request) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/api/audit").status_code == 403
    assert client.get("/audit/").status_code == 403


def test_anonymous_scripts_get_401() -> None:
    assert Client().get("/api/audit").status_code == 401


def test_entries_are_never_changed_or_removed(admin: User) -> None:
    entry = audit.record(actor=admin, action="key.create", detail={"prefix": "odw_abc"})
    entry.detail = "rewritten"
    with pytest.raises(AuditImmutable):
        entry.save()
    with pytest.raises(AuditImmutable):
        entry.delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.filter(pk=entry.pk).update(outcome="failed")
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.all().delete()
    # The service layer offers a way in and a way to read, nothing else.
    assert {name for name in audit.__all__ if not name[0].isupper()} == {
        "entries",
        "parse_filters",
        "record",
    }
    fresh = AuditEntry.objects.get(pk=entry.pk)
    assert (fresh.detail, fresh.outcome) == ({"prefix": "odw_abc"}, "ok")


def test_an_entry_keeps_its_actor_name_after_the_user_is_deleted() -> None:
    grace = User.objects.create_user("grace")
    audit.record(actor=grace, action="price.close")
    grace.delete()

    entry = AuditEntry.objects.get()
    assert entry.actor is None and entry.actor_name == "grace"


def test_the_page_lists_filters_and_pages_the_entries(as_admin: Client, admin: User) -> None:
    for n in range(60):
        audit.record(actor=admin, action="model.retire", target=audit.Target("model", str(n)))
    audit.record(
        actor=None, action="savings.recompute", detail={"runs": 3, "ram": {"enabled": True}}
    )

    first = as_admin.get("/audit/").content.decode()
    assert "Page 1 of 2" in first and "savings.recompute" in first
    assert "runs: 3; ram: enabled yes" in first  # nested details read as words, not repr
    second = as_admin.get("/audit/", {"action": "model", "page": "2"}).content.decode()
    assert "Page 2 of 2" in second and "savings.recompute" not in second
    assert "action=model&amp;page=1" in second  # the pager keeps the filters
    assert 'href="/audit/"' in first and "aria-current" in first.split('href="/audit/"', 1)[1][:40]
