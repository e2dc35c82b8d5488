"""/api/nodes: shapes, who may do what, the sentences of a refusal, and the embedded mode's
one node."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.accounts.services import create_token
from opsdash.core.audit import entries
from opsdash.fleet import services
from opsdash.fleet.models import Node, NodeToken
from opsdash.telemetry.sampler import get_sampler, stop_sampler
from tests.fixtures.personas import client_for

pytestmark = pytest.mark.django_db

NODE_KEYS = {
    "name",
    "status",
    "last_seen",
    "version",
    "cpu_count",
    "memory_total_bytes",
    "gpus",
    "loaded",
    "queue_length",
    "draining",
    "approved_at",
}


@pytest.fixture
def fleet_mode(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = True
    settings.NODE_UNHEALTHY_SECONDS = 15
    settings.NODE_OFFLINE_SECONDS = 60


def _enroll(name: str = "gpu-1", settings=None) -> Node:  # type: ignore[no-untyped-def]
    _, secret = services.create_node_token(name="t", user=None)
    # FLEET off while enrolling: no health-sweep thread beside the test database.
    from django.test import override_settings

    with override_settings(FLEET=False):
        node, _ = services.register_node(
            name=name,
            token_secret=secret,
            facts={"cpu_count": 8, "memory_total_bytes": 2**34, "gpus": [{"index": 0}]},
            version="1.2",
        )
    return node


def _bearer(user) -> Client:  # type: ignore[no-untyped-def]
    secret = create_token(user=user, name="script").secret
    return Client(headers={"authorization": f"Bearer {secret}"})


def test_the_list_has_the_stable_node_shape(fleet_mode, operator) -> None:  # type: ignore[no-untyped-def]
    _enroll("gpu-2")
    _enroll("gpu-1")
    answer = client_for(operator).get("/api/nodes")
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 2 and [n["name"] for n in body["items"]] == ["gpu-1", "gpu-2"]
    first = body["items"][0]
    assert set(first) >= NODE_KEYS
    assert first["status"] == "pending" and first["cpu_count"] == 8 and first["version"] == "1.2"
    assert (
        first["gpus"] == [{"index": 0}] and first["loaded"] == [] and first["approved_at"] is None
    )


def test_one_node_by_name_or_a_404_sentence(fleet_mode, operator) -> None:  # type: ignore[no-untyped-def]
    _enroll()
    client = client_for(operator)
    assert client.get("/api/nodes/gpu-1").json()["name"] == "gpu-1"
    missing = client.get("/api/nodes/gpu-9")
    assert (
        missing.status_code == 404 and missing.json()["detail"] == "There is no node named “gpu-9”."
    )


def test_an_admin_approves_drains_resumes_and_deletes_over_the_api(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    _enroll()
    client = _bearer(admin)
    approved = client.post("/api/nodes/gpu-1/approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "healthy" and approved.json()["approved_at"]
    assert client.post("/api/nodes/gpu-1/drain").json()["status"] == "draining"
    again = client.post("/api/nodes/gpu-1/drain")
    assert (
        again.status_code == 409
        and again.json()["detail"] == "The node “gpu-1” is already draining."
    )
    assert client.post("/api/nodes/gpu-1/resume").json()["status"] == "healthy"

    refused = client.delete("/api/nodes/gpu-1")
    assert refused.status_code == 409
    assert "only an offline or pending node can be deleted" in refused.json()["detail"]
    Node.objects.update(last_seen=timezone.now() - timedelta(seconds=120))
    assert client.get("/api/nodes/gpu-1").json()["status"] == "offline"
    assert client.delete("/api/nodes/gpu-1").status_code == 204
    assert client.get("/api/nodes").json()["count"] == 0
    assert [e.action for e in entries(target_type="node", actor="ada")] == [
        "node.delete",
        "node.resume",
        "node.drain",
        "node.approve",
    ]


def test_unknown_nodes_get_a_404_on_every_action(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    client = _bearer(admin)
    for verb in ("approve", "drain", "resume"):
        answer = client.post(f"/api/nodes/nope/{verb}")
        assert answer.status_code == 404 and "no node named “nope”" in answer.json()["detail"]
    assert client.delete("/api/nodes/nope").status_code == 404


@pytest.mark.parametrize(
    ("persona", "read", "change"),
    [("operator", 200, 403), ("admin", 200, 200), ("manager", 403, 403), ("outsider", 403, 403)],
)
def test_operators_see_nodes_and_only_admins_change_them(  # type: ignore[no-untyped-def]
    fleet_mode, request, persona, read, change
) -> None:
    from django.contrib.auth.models import User

    user = (
        User.objects.create_user("nobody")
        if persona == "outsider"
        else request.getfixturevalue(persona)
    )
    _enroll()
    client = _bearer(user)
    assert client.get("/api/nodes").status_code == read
    assert client.get("/api/nodes/gpu-1").status_code == read
    assert client.post("/api/nodes/gpu-1/approve").status_code == change
    assert client.get("/api/nodes/tokens").status_code == (200 if persona == "admin" else 403)
    assert Node.objects.get().approved_at is not None if change == 200 else True


def test_anonymous_callers_get_401(fleet_mode) -> None:  # type: ignore[no-untyped-def]
    assert Client().get("/api/nodes").status_code == 401
    assert Client().post("/api/nodes/gpu-1/approve").status_code == 401


def test_node_tokens_are_created_listed_and_revoked_by_admins(fleet_mode, admin) -> None:  # type: ignore[no-untyped-def]
    client = _bearer(admin)
    created = client.post("/api/nodes/tokens", {"name": "rack 4"}, content_type="application/json")
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("odn_") and body["active"] and body["created_by"] == "ada"
    listed = client.get("/api/nodes/tokens").json()
    assert listed["count"] == 1 and "secret" not in listed["items"][0]
    assert listed["items"][0]["prefix"] == body["secret"][:12]

    revoked = client.delete(f"/api/nodes/tokens/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    again = client.delete(f"/api/nodes/tokens/{body['id']}")
    assert again.status_code == 409 and "already revoked" in again.json()["detail"]
    assert client.delete("/api/nodes/tokens/999").status_code == 404
    assert NodeToken.objects.get().revoked_at is not None


def test_the_embedded_mode_lists_exactly_the_local_host_from_the_sampler(
    settings, operator
) -> None:  # type: ignore[no-untyped-def]
    settings.FLEET = False
    settings.TELEMETRY_EMBEDDED = True
    settings.NODE_NAME = "workstation"
    try:
        frame = get_sampler().latest(wait=10)
        assert frame is not None
        body = client_for(operator).get("/api/nodes").json()
    finally:
        stop_sampler()
    assert body["count"] == 1
    (node,) = body["items"]
    assert node["name"] == "workstation" and node["status"] == "healthy"
    assert node["cpu_count"] == frame["cpu"]["count"] == os.cpu_count()
    assert node["memory_total_bytes"] == frame["memory"]["total_bytes"]
    assert node["gpus"] == frame["gpus"] and node["loaded"] == [] and node["queue_length"] == 0
    assert not Node.objects.exists()


def test_the_embedded_mode_refuses_changes_with_a_sentence(settings, admin) -> None:  # type: ignore[no-untyped-def]
    settings.FLEET = False
    settings.NODE_NAME = "workstation"
    client = _bearer(admin)
    for verb in ("approve", "drain", "resume"):
        answer = client.post(f"/api/nodes/workstation/{verb}")
        assert answer.status_code == 409
        assert answer.json()["detail"].startswith(
            "This OpsDash runs embedded: the local host “workstation” is its only node"
        )
    assert client.delete("/api/nodes/workstation").status_code == 409
