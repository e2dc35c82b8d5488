"""The Nodes pages: what each role sees, the admin's forms, node tokens shown once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from opsdash.core.audit import entries
from opsdash.fleet import services
from opsdash.fleet.models import Node, NodeToken, Placement
from opsdash.runs.models import Run, RunSource
from opsdash.telemetry.sampler import stop_sampler
from tests.factories import local_model, workflow
from tests.fixtures.personas import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_mode(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = True
    settings.NODE_UNHEALTHY_SECONDS = 15
    settings.NODE_OFFLINE_SECONDS = 60


def _enroll(name: str) -> Node:
    _, secret = services.create_node_token(name="t", user=None)
    with override_settings(FLEET=False):  # no health-sweep thread beside the test database
        node, _ = services.register_node(
            name=name,
            token_secret=secret,
            facts={
                "cpu_count": 8,
                "memory_total_bytes": 2**34,
                "gpus": [{"index": 0, "name": "L4", "mem_total": 2**34, "mem_used": 2**32}],
            },
            version="1.2",
        )
    return node


def _text(response) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r"\s+", " ", response.content.decode())


def test_operators_see_every_node_without_the_admin_forms(fleet_mode, operator) -> None:  # type: ignore[no-untyped-def]
    _enroll("gpu-1")
    page = client_for(operator).get("/nodes/")
    assert page.status_code == 200
    text = _text(page)
    assert 'href="/nodes/gpu-1/"' in text and ">pending<" in text and "8 cores" in text
    assert "Approve" not in text and "Node tokens" not in text
    assert 'href="/nodes/"' in text  # the nav link


def test_an_admin_approves_a_pending_node_from_the_list(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    _enroll("gpu-1")
    client = client_for(admin)
    assert 'action="/nodes/gpu-1/approve"' in _text(client.get("/nodes/"))
    done = client.post("/nodes/gpu-1/approve", follow=True)
    text = _text(done)
    assert "Node “gpu-1” approved" in text and ">healthy<" in text
    assert 'action="/nodes/gpu-1/drain"' in text
    assert entries(action="node.approve").get().actor_name == "ada"


def test_a_refused_action_is_explained_on_the_page(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    node = _enroll("gpu-1")
    services.approve_node(node=node, user=admin)
    done = client_for(admin).post("/nodes/gpu-1/delete", follow=True)
    assert "only an offline or pending node can be deleted" in _text(done)
    assert Node.objects.filter(name="gpu-1").exists()


def test_operators_cannot_post_admin_actions_or_create_tokens(fleet_mode, operator) -> None:  # type: ignore[no-untyped-def]
    _enroll("gpu-1")
    client = client_for(operator)
    assert client.post("/nodes/gpu-1/approve").status_code == 403
    assert client.post("/nodes/", {"name": "sneaky"}).status_code == 403
    assert NodeToken.objects.filter(name="sneaky").count() == 0


def test_a_new_node_token_is_shown_once_with_the_agent_command(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    client = client_for(admin)
    text = _text(client.post("/nodes/", {"name": "rack 9"}))
    secret = re.search(r'data-testid="new-node-token">(odn_[\w-]+)<', text)
    assert secret is not None
    assert f"--token {secret.group(1)} --name NODE" in text
    assert "manage.py agent --hub http://testserver" in text
    assert secret.group(1) not in _text(client.get("/nodes/"))
    token = NodeToken.objects.get(name="rack 9")
    revoked = _text(client.post(f"/nodes/tokens/{token.pk}/revoke", follow=True))
    assert "revoked" in revoked
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_a_node_page_shows_its_facts_gpus_placements_runs_and_history(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    node = _enroll("gpu-1")
    services.approve_node(node=node, user=admin)
    model = local_model("tiny")
    Placement.objects.create(model=model, node=node, status="ready")
    run = Run.objects.create(
        model=model, workflow=workflow("flow"), source=RunSource.API, prompt="hi", node="gpu-1"
    )
    text = _text(client_for(admin).get("/nodes/gpu-1/"))
    assert ">healthy<" in text and "8 cores" in text and ">L4<" in text
    assert f'href="/models/{model.pk}/"' in text and ">ready<" in text
    assert f'href="/playground/runs/{run.pk}/"' in text
    assert "node.register" in text and "node.approve" in text
    assert 'href="/telemetry/?host=gpu-1"' in text
    assert client_for(admin).get("/nodes/gpu-9/").status_code == 404


def test_the_page_shows_a_silent_node_as_unhealthy_before_any_sweep(fleet_mode, operator) -> None:  # type: ignore[no-untyped-def]
    node = _enroll("gpu-1")
    services.approve_node(node=node, user=None)
    Node.objects.update(last_seen=timezone.now() - timedelta(seconds=20))
    partial = client_for(operator).get("/nodes/", headers={"HX-Request": "true"})
    text = _text(partial)
    assert ">unhealthy<" in text and "<html" not in text


def test_the_embedded_mode_shows_the_local_host_as_its_one_node(settings, admin) -> None:  # type: ignore[no-untyped-def]
    settings.FLEET = False
    settings.NODE_NAME = "workstation"
    try:
        text = _text(client_for(admin).get("/nodes/"))
        detail = client_for(admin).get("/nodes/workstation/")
    finally:
        stop_sampler()
    assert 'href="/nodes/workstation/"' in text and ">healthy<" in text
    assert "runs embedded" in text and '/approve"' not in text
    assert detail.status_code == 200 and "every installed model is on this host" in _text(detail)
