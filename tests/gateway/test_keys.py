"""Workflow API keys: shown once, hashed at rest, revocable; the pages admins and managers see."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from opsdash.gateway.models import WorkflowKey
from opsdash.gateway.services import revoke_api_key, use_api_key
from tests.fixtures.personas import client_for

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(workflow):
    out = StringIO()
    call_command("create_api_key", workflow.slug, "--name", "zapier", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]

    key = WorkflowKey.objects.get(workflow=workflow)
    assert secret.startswith("odw_") and len(secret) > 40
    assert key.name == "zapier" and secret.startswith(key.prefix) and len(key.prefix) == 12
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {key.digest, key.prefix, key.name}
    assert use_api_key(secret=secret) == key


def test_create_api_key_names_the_workflows_when_the_slug_is_wrong(workflow):
    with pytest.raises(CommandError, match="invoice-extraction"):
        call_command("create_api_key", "nope", stdout=StringIO(), stderr=StringIO())


def test_each_use_counts_and_a_revoked_key_stops_counting(api_key):
    first = use_api_key(secret=api_key.secret)
    assert first is not None and first.request_count == 1
    use_api_key(secret=api_key.secret)
    key = WorkflowKey.objects.get()
    assert key.request_count == 2 and key.last_used_at is not None

    revoke_api_key(key=key)
    revoked = use_api_key(secret=api_key.secret)
    assert revoked == key and not revoked.is_active
    assert WorkflowKey.objects.get().request_count == 2
    assert use_api_key(secret="odw_" + "x" * 43) is None
    assert use_api_key(secret="ops_personal-token") is None, "a personal token opens no /v1"


def test_an_admin_creates_a_key_on_the_workflow_page_and_sees_it_once(as_admin, workflow, admin):
    page = as_admin.get(f"/gateway/workflows/{workflow.slug}/")
    assert page.status_code == 200 and b"No keys yet" in page.content

    created = as_admin.post(f"/gateway/workflows/{workflow.slug}/keys/", {"name": "n8n prod"})
    assert created.status_code == 200
    secret = created.context["new_secret"]
    assert secret.encode() in created.content and b"will not be shown again" in created.content
    key = WorkflowKey.objects.get()
    assert key.created_by == admin and key.workflow == workflow

    again = as_admin.get(f"/gateway/workflows/{workflow.slug}/")
    assert secret.encode() not in again.content
    assert key.prefix.encode() in again.content and b"n8n prod" in again.content


def test_an_admin_revokes_a_key_and_it_shows_as_revoked(as_admin, workflow, api_key):
    response = as_admin.post(f"/gateway/keys/{api_key.key.pk}/revoke/", follow=True)
    assert response.status_code == 200 and b"revoked" in response.content
    assert WorkflowKey.objects.get().revoked_at is not None


def test_a_manager_sees_the_keys_but_cannot_create_or_revoke(manager, workflow, api_key):
    client = client_for(manager)
    page = client.get(f"/gateway/workflows/{workflow.slug}/")
    assert page.status_code == 200 and api_key.key.prefix.encode() in page.content
    assert b"Create API key" not in page.content and b"Revoke" not in page.content
    assert (
        client.post(f"/gateway/workflows/{workflow.slug}/keys/", {"name": "x"}).status_code == 403
    )
    assert client.post(f"/gateway/keys/{api_key.key.pk}/revoke/").status_code == 403
    assert WorkflowKey.objects.get().is_active


def test_the_gateway_page_shows_the_base_url_snippets_and_workflows(as_admin, workflow, tiny_model):
    response = as_admin.get("/gateway/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "http://testserver/v1" in html
    for snippet in ("from openai import OpenAI", 'import OpenAI from "openai"', "fetch(", "curl "):
        assert snippet in html
    assert f'model="{tiny_model.slug}"' in html, "snippets use a real model id"
    assert "Invoice extraction" in html and "New workflow" in html
