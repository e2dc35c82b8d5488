"""Fleet core services: node tokens, enrolment, credentials, heartbeats, the health sweep and
what admins do to nodes — on the real database (SQLite here; the fleet process tests run the
same code on PostgreSQL with two hubs)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from opsdash.core.audit import entries
from opsdash.fleet import health, protocol, services
from opsdash.fleet.models import Node, NodeStatus, NodeToken, Placement
from opsdash.fleet.services import NodeRefused
from tests.factories import local_model

pytestmark = pytest.mark.django_db

FACTS = {"cpu_count": 16, "memory_total_bytes": 64 * 2**30, "gpus": [{"index": 0, "name": "H100"}]}


@pytest.fixture(autouse=True)
def embedded_enrolment(settings):  # type: ignore[no-untyped-def]
    # Services are tested without the sweep thread (FLEET off); admin actions turn it on.
    settings.FLEET = False
    settings.NODE_UNHEALTHY_SECONDS = 15
    settings.NODE_OFFLINE_SECONDS = 60


def _enroll(name: str = "gpu-1") -> tuple[Node, str]:
    _, secret = services.create_node_token(name="rack", user=None)
    return services.register_node(
        name=name, token_secret=secret, facts=FACTS, version="1.0", address="10.0.0.7"
    )


def _approved(settings, name: str = "gpu-1") -> tuple[Node, str]:  # type: ignore[no-untyped-def]
    node, credential = _enroll(name)
    settings.FLEET = True
    node = services.approve_node(node=node, user=None)
    settings.FLEET = False
    return node, credential


def _age(node: Node, seconds: float) -> Node:
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(seconds=seconds))
    node.refresh_from_db()
    return node


def _actions(name: str) -> list[str]:
    return list(
        entries(target_type="node", target_id=name).order_by("at").values_list("action", flat=True)
    )


# --- tokens and enrolment -------------------------------------------------------------------


def test_a_node_token_is_shown_once_and_kept_only_as_a_hash(admin) -> None:  # type: ignore[no-untyped-def]
    token, secret = services.create_node_token(name="rack 2", user=admin)
    assert secret.startswith("odn_") and len(secret) > 40
    stored = NodeToken.objects.get(pk=token.pk)
    assert secret not in {stored.secret_hash, stored.prefix} and secret.startswith(stored.prefix)
    assert entries(action="node_token.create").get().actor_name == "ada"


def test_a_node_registers_with_a_valid_token_and_waits_pending() -> None:
    node, credential = _enroll()
    assert node.status == NodeStatus.PENDING and node.approved_at is None
    assert credential.startswith("odc_") and credential not in node.credential_hash
    assert (node.cpu_count, node.memory_total_bytes, node.gpus) == (16, 64 * 2**30, FACTS["gpus"])
    assert (node.version, node.address) == ("1.0", "10.0.0.7")
    assert node.enrolled_with is not None and node.enrolled_with.last_used_at is not None
    assert _actions("gpu-1") == ["node.register"]


def test_an_unknown_token_is_refused_with_a_sentence() -> None:
    with pytest.raises(NodeRefused) as refused:
        services.register_node(name="gpu-1", token_secret="odn_not-a-token")
    assert "create_node_token" in refused.value.reason
    assert not Node.objects.exists()


def test_a_revoked_token_enrolls_nobody_but_its_nodes_keep_their_identity(admin) -> None:  # type: ignore[no-untyped-def]
    token, secret = services.create_node_token(name="rack", user=admin)
    node, credential = services.register_node(name="gpu-1", token_secret=secret)
    services.revoke_node_token(token=token, user=admin)

    with pytest.raises(NodeRefused) as refused:
        services.register_node(name="gpu-2", token_secret=secret)
    assert "revoked" in refused.value.reason
    assert services.authenticate_node(name="gpu-1", credential=credential).pk == node.pk
    with pytest.raises(NodeRefused, match="already revoked"):
        services.revoke_node_token(token=token, user=admin)
    assert [e.action for e in entries(action="node_token")] == [
        "node_token.revoke",
        "node_token.create",
    ]


def test_a_name_already_enrolled_cannot_be_taken_with_a_token() -> None:
    _enroll("gpu-1")
    with pytest.raises(NodeRefused) as refused:
        _enroll("gpu-1")
    assert refused.value.code == "conflict" and "delete that node" in refused.value.reason
    assert Node.objects.count() == 1


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 64, "tokens"])
def test_a_bad_or_reserved_node_name_is_refused(name: str) -> None:
    with pytest.raises(NodeRefused) as refused:
        _enroll(name)
    assert refused.value.param == "name"


def test_a_credential_identifies_its_node_and_no_other() -> None:
    node, credential = _enroll("gpu-1")
    found = services.authenticate_node(
        name="gpu-1", credential=credential, facts={"cpu_count": 32}, version="1.1"
    )
    assert found.pk == node.pk
    node.refresh_from_db()
    assert (node.cpu_count, node.version) == (32, "1.1")

    with pytest.raises(NodeRefused, match="belongs to the node “gpu-1”"):
        services.authenticate_node(name="gpu-2", credential=credential)
    with pytest.raises(NodeRefused, match="enroll it again"):
        services.authenticate_node(name="gpu-1", credential="odc_forged")
    with pytest.raises(NodeRefused):
        services.authenticate_node(name="gpu-1", credential="")


def test_file_fetches_are_open_to_approved_nodes_only(settings) -> None:  # type: ignore[no-untyped-def]
    node, credential = _enroll("gpu-1")
    assert services.authenticate_node_credential(credential=credential) is None  # pending
    settings.FLEET = True
    services.approve_node(node=node, user=None)
    assert services.authenticate_node_credential(credential=credential).pk == node.pk
    assert services.authenticate_node_credential(credential="odc_forged") is None
    assert services.authenticate_node_credential(credential="") is None


# --- heartbeats and the sweep ---------------------------------------------------------------


def test_the_sweep_marks_a_silent_node_unhealthy_at_15_s_and_offline_at_60_s(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    seen = node.last_seen
    assert node.status == NodeStatus.HEALTHY

    assert services.sweep_node_health(now=seen + timedelta(seconds=14)) == []
    moved = services.sweep_node_health(now=seen + timedelta(seconds=16))
    assert [(m.node, m.old, m.new) for m in moved] == [("gpu-1", "healthy", "unhealthy")]
    assert services.sweep_node_health(now=seen + timedelta(seconds=30)) == []
    moved = services.sweep_node_health(now=seen + timedelta(seconds=61))
    assert [(m.old, m.new) for m in moved] == [("unhealthy", "offline")]
    assert services.sweep_node_health(now=seen + timedelta(seconds=600)) == []

    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE
    assert _actions("gpu-1") == ["node.register", "node.approve", "node.unhealthy", "node.offline"]


def test_a_node_silent_past_the_offline_limit_goes_straight_to_offline(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    moved = services.sweep_node_health(now=node.last_seen + timedelta(seconds=90))
    assert [(m.old, m.new) for m in moved] == [("healthy", "offline")]


def test_pending_nodes_are_not_swept(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    assert services.sweep_node_health(now=node.last_seen + timedelta(seconds=600)) == []
    node.refresh_from_db()
    assert node.status == NodeStatus.PENDING


def test_a_heartbeat_brings_an_unhealthy_node_back_even_through_an_old_copy(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    held = Node.objects.get(pk=node.pk)  # what the consumer holds: still says healthy
    _age(node, 20)
    services.sweep_node_health()
    assert Node.objects.get(pk=node.pk).status == NodeStatus.UNHEALTHY

    held.last_seen = timezone.now() - timedelta(seconds=20)
    services.record_heartbeat(node=held, loaded=[{"model": 1, "name": "m"}], queue_length=2)
    node.refresh_from_db()
    assert node.status == NodeStatus.HEALTHY and held.status == NodeStatus.HEALTHY
    assert node.loaded == [{"model": 1, "name": "m"}] and node.queue_length == 2
    assert (timezone.now() - node.last_seen).total_seconds() < 5
    healthy = entries(action="node.healthy").get()
    assert healthy.detail == {"from": "unhealthy", "to": "healthy"}


def test_an_offline_draining_node_comes_back_draining(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    settings.FLEET = True
    services.drain_node(node=node, user=None)
    _age(node, 120)
    services.sweep_node_health()
    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE and node.draining
    services.record_heartbeat(node=node)
    node.refresh_from_db()
    assert node.status == NodeStatus.DRAINING


def test_a_heartbeat_writes_last_seen_at_most_every_few_seconds(
    settings, django_assert_num_queries
) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    services.record_heartbeat(node=node, loaded=[], queue_length=0)  # as it was: nothing to write
    node.refresh_from_db()
    first = node.last_seen
    with django_assert_num_queries(0):
        services.record_heartbeat(node=node, loaded=[], queue_length=0)
    with django_assert_num_queries(1):
        services.record_heartbeat(node=node, queue_length=3)  # a change is written at once
    node.refresh_from_db()
    assert node.last_seen == first and node.queue_length == 3

    node.last_seen = first - timedelta(seconds=3)
    services.record_heartbeat(node=node)
    node.refresh_from_db()
    assert node.last_seen > first


def test_a_heartbeat_for_a_deleted_node_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    held = Node.objects.get(pk=node.pk)
    Node.objects.filter(pk=node.pk).delete()
    held.last_seen = None
    with pytest.raises(NodeRefused, match="deleted"):
        services.record_heartbeat(node=held)


def test_disconnecting_clears_only_that_connection(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    services.record_heartbeat(node=node, connected_via="hub-a!1")
    services.mark_disconnected(node=Node.objects.get(pk=node.pk), connected_via="hub-b!9")
    assert Node.objects.get(pk=node.pk).connected_via == "hub-a!1"
    services.mark_disconnected(node=node, connected_via="hub-a!1")
    assert Node.objects.get(pk=node.pk).connected_via == ""


def test_a_read_never_shows_a_stale_healthy(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    _age(node, 20)
    settings.FLEET = True
    assert [(v.name, v.status) for v in services.list_nodes()] == [("gpu-1", "unhealthy")]
    _age(node, 70)
    assert services.get_node_view(name="gpu-1").status == "offline"
    assert Node.objects.get(pk=node.pk).status == NodeStatus.HEALTHY  # nothing was written


@pytest.mark.django_db(transaction=True)
def test_two_racing_sweeps_record_a_transition_once(settings) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    at = node.last_seen + timedelta(seconds=20)
    results: list[list[services.Transition]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def sweep() -> None:
        try:
            start.wait()
            results.append(services.sweep_node_health(now=at))
        except BaseException as exc:  # pragma: no cover - shown in the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(len(r) for r in results) == [0, 1]
    assert entries(action="node.unhealthy").count() == 1


def test_the_sweep_thread_runs_only_in_fleet_mode(settings) -> None:  # type: ignore[no-untyped-def]
    health.start_sweeper()
    assert not health.running()


@pytest.mark.django_db(transaction=True)
def test_the_sweep_thread_of_a_hub_process_ages_a_silent_node_by_itself(
    settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    node, _ = _approved(settings)
    _age(node, 20)
    monkeypatch.setattr(health, "SWEEP_SECONDS", 0.05)
    settings.FLEET = True
    health.start_sweeper()
    try:
        assert health.running()
        deadline = time.monotonic() + 10
        while Node.objects.get(pk=node.pk).status != NodeStatus.UNHEALTHY:
            assert time.monotonic() < deadline, "the sweep thread did not age the node"
            time.sleep(0.05)
    finally:
        health.stop_sweeper()
    assert not health.running()
    assert entries(action="node.unhealthy").count() == 1


# --- what admins do -------------------------------------------------------------------------


def _listen(name: str) -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(protocol.node_group(name), channel)
    return channel


def _told(channel: str) -> dict[str, object]:
    message = async_to_sync(get_channel_layer().receive)(channel)
    assert message["type"] == "agent.send"
    return protocol.decode(message["text"])


def test_approve_drain_and_resume_tell_the_node_and_are_audited(
    settings, admin, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    settings.FLEET = True
    channel = _listen("gpu-1")
    with django_capture_on_commit_callbacks(execute=True):
        node = services.approve_node(node=node, user=admin)
    assert node.status == NodeStatus.HEALTHY and node.approved_by == admin
    assert _told(channel) == {
        "type": "status",
        "status": "healthy",
        "approved": True,
        "draining": False,
    }

    with django_capture_on_commit_callbacks(execute=True):
        node = services.drain_node(node=node, user=admin)
    assert (node.status, node.draining) == (NodeStatus.DRAINING, True)
    assert _told(channel)["status"] == "draining"
    with pytest.raises(NodeRefused, match="already draining"):
        services.drain_node(node=node, user=admin)

    with django_capture_on_commit_callbacks(execute=True):
        node = services.resume_node(node=node, user=admin)
    assert (node.status, node.draining) == (NodeStatus.HEALTHY, False)
    assert _told(channel) == {
        "type": "status",
        "status": "healthy",
        "approved": True,
        "draining": False,
    }
    with pytest.raises(NodeRefused, match="not draining"):
        services.resume_node(node=node, user=admin)
    with pytest.raises(NodeRefused, match="already approved"):
        services.approve_node(node=node, user=admin)

    done = entries(target_type="node", target_id="gpu-1", actor="ada").order_by("at")
    assert [(e.action, e.detail["to"]) for e in done] == [
        ("node.approve", "healthy"),
        ("node.drain", "draining"),
        ("node.resume", "healthy"),
    ]


def test_a_pending_node_cannot_be_drained(settings, admin) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    settings.FLEET = True
    with pytest.raises(NodeRefused, match="approve it before draining"):
        services.drain_node(node=node, user=admin)


def test_approving_a_node_that_went_quiet_shows_its_real_state(settings, admin) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    _age(node, 90)
    settings.FLEET = True
    assert services.approve_node(node=node, user=admin).status == NodeStatus.OFFLINE


def test_only_an_offline_or_pending_node_can_be_deleted(
    settings, admin, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    node, credential = _approved(settings)
    settings.FLEET = True
    with pytest.raises(NodeRefused) as refused:
        services.delete_node(node=node, user=admin)
    assert refused.value.code == "wrong_status" and "is healthy" in refused.value.reason

    Placement.objects.create(model=local_model(), node=node)
    _age(node, 61)  # stale: offline by its heartbeat's age even before a sweep writes it
    channel = _listen("gpu-1")
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_node(node=node, user=admin)
    assert not Node.objects.exists() and not Placement.objects.exists()
    assert _told(channel)["status"] == "deleted"
    with pytest.raises(NodeRefused):
        services.authenticate_node(name="gpu-1", credential=credential)
    assert entries(action="node.delete").get().detail["status"] == "offline"

    pending, _ = _enroll("gpu-2")
    services.delete_node(node=pending, user=admin)
    assert not Node.objects.filter(name="gpu-2").exists()


def test_every_admin_action_is_refused_in_the_embedded_mode(settings, admin) -> None:  # type: ignore[no-untyped-def]
    node, _ = _enroll()
    for action in (
        services.approve_node,
        services.drain_node,
        services.resume_node,
        services.delete_node,
    ):
        with pytest.raises(NodeRefused) as refused:
            action(node=node, user=admin)
        assert refused.value.code == "conflict" and "runs embedded" in refused.value.reason


def test_create_node_token_prints_the_secret_alone_on_its_last_line(capsys) -> None:  # type: ignore[no-untyped-def]
    call_command("create_node_token", "--name", "rack 3")
    out = capsys.readouterr().out.strip().splitlines()
    secret = out[-1]
    assert secret.startswith("odn_")
    node, _ = services.register_node(name="gpu-9", token_secret=secret)
    assert node.enrolled_with.name == "rack 3"
