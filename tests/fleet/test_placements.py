"""Placing models on nodes: the service rules, what each node is told, the agents' progress,
and what a retired model does to its placements."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdash.catalog import services as catalog_services
from opsdash.catalog.models import ModelStatus
from opsdash.core.audit import entries
from opsdash.core.errors import Code
from opsdash.fleet import placements, protocol
from opsdash.fleet.models import Placement, PlacementStatus
from opsdash.runs import capacity
from tests.fleet.placing import enroll, listen, nothing_received, received

pytestmark = pytest.mark.django_db

HUB_CHANNEL = "specific.hub-a!socket1"


@pytest.fixture
def fleet_mode(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = True
    return settings


@pytest.fixture
def commit(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Runs what the services queue for after their commit (messages to nodes, hooks)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_a_spec_says_what_a_node_needs_to_fetch_check_and_load(tiny_model, settings) -> None:
    settings.PARALLEL_SEQUENCES, settings.MEMORY_BUDGET_BYTES = 4, 64 * 1024**3
    spec = placements.placement_spec(tiny_model)
    assert spec == {
        "model_id": tiny_model.pk,
        "sha256": tiny_model.sha256,
        "name": tiny_model.name,
        "slug": tiny_model.slug,
        "backend": tiny_model.backend,
        "model_type": tiny_model.model_type,
        "size_bytes": Path(tiny_model.file_path).stat().st_size,
        "file_url": f"/api/fleet/files/{tiny_model.sha256}",
        # How the node loads it: as many sequences decoded together as the hub's run path.
        "parallel_sequences": 4,
        "estimated_bytes": capacity.estimated_bytes(tiny_model, parallel_sequences=4),
    }
    assert len(spec["sha256"]) == 64 and spec["backend"]


def test_placing_a_model_records_it_audits_it_and_tells_the_connected_node(
    fleet_mode, commit, tiny_model, admin
) -> None:
    node = enroll("gpu-1", connected_via=HUB_CHANNEL).node
    channel = listen(node)
    with commit():
        placement = placements.place_model(model=tiny_model, node=node, user=admin)
    assert placement.status == PlacementStatus.PENDING and placement.node == node
    message = received(channel)
    assert message == {"type": protocol.PLACE, "placement": placements.placement_spec(tiny_model)}
    entry = entries(action="model.place").get()
    assert entry.actor == admin and entry.target_id == str(tiny_model.pk)
    assert "gpu-1" in str(entry.detail)
    assert placements.placement_specs(node=node) == [placements.placement_spec(tiny_model)]


def test_placing_it_again_keeps_the_placement_and_does_not_ask_twice(
    fleet_mode, commit, tiny_model, admin
) -> None:
    node = enroll("gpu-1", connected_via=HUB_CHANNEL).node
    first = placements.place_model(model=tiny_model, node=node, user=admin)
    placements.record_placement(node=node, model_id=tiny_model.pk, status="ready")
    channel = listen(node)
    with commit():
        again = placements.place_model(model=tiny_model, node=node, user=admin)
    assert again.pk == first.pk and again.status == PlacementStatus.READY
    assert placements.is_active(again)
    assert nothing_received(channel)
    assert entries(action="model.place").count() == 1


def test_a_failed_placement_starts_again_when_placed_again(fleet_mode, tiny_model, admin) -> None:
    node = enroll("gpu-1").node
    placements.place_model(model=tiny_model, node=node, user=admin)
    placements.record_placement(
        node=node, model_id=tiny_model.pk, status="failed", error="No space left on device."
    )
    again = placements.place_model(model=tiny_model, node=node, user=admin)
    assert (again.status, again.error, again.bytes_done) == (PlacementStatus.PENDING, "", 0)
    assert entries(action="model.place").count() == 2


def test_a_node_waiting_for_approval_is_refused_with_what_to_do(
    fleet_mode, tiny_model, admin
) -> None:
    node = enroll("gpu-new", approve=False).node
    with pytest.raises(placements.PlacementRefused) as refused:
        placements.place_model(model=tiny_model, node=node, user=admin)
    assert refused.value.status == 409
    assert "gpu-new" in refused.value.reason and "approv" in refused.value.reason
    assert not Placement.objects.exists()


def test_only_a_ready_model_with_its_file_can_be_placed(fleet_mode, tiny_model, admin) -> None:
    node = enroll("gpu-1").node
    catalog_services.retire_model(model=tiny_model, user=admin)
    tiny_model.refresh_from_db()
    with pytest.raises(placements.PlacementRefused, match="retired; only a ready model"):
        placements.place_model(model=tiny_model, node=node, user=admin)

    catalog_services.restore_model(model=tiny_model, user=admin)
    Path(tiny_model.file_path).unlink()
    with pytest.raises(placements.PlacementRefused) as refused:
        placements.place_model(model=tiny_model, node=node, user=admin)
    assert refused.value.code == Code.FILE_MISSING and "Install the file again" in str(
        refused.value.reason
    )
    assert not Placement.objects.exists()


def test_embedded_mode_has_no_nodes_to_place_on(tiny_model, admin, settings) -> None:
    node = enroll("gpu-1").node
    settings.FLEET = False
    with pytest.raises(placements.PlacementRefused, match="embedded mode"):
        placements.place_model(model=tiny_model, node=node, user=admin)


def test_an_agent_reports_progress_until_ready_and_ready_is_audited(
    fleet_mode, tiny_model, admin
) -> None:
    node = enroll("gpu-1").node
    placements.place_model(model=tiny_model, node=node, user=admin)
    size = tiny_model.size_bytes
    fetching = placements.record_placement(
        node=node, model_id=tiny_model.pk, status="fetching", bytes_done=size // 2
    )
    assert fetching is not None
    assert (fetching.status, fetching.bytes_done) == (PlacementStatus.FETCHING, size // 2)
    placements.record_placement(
        node=node, model_id=tiny_model.pk, status="loading", bytes_done=size
    )
    assert not entries(action="model.placement").exists()  # progress is not an event
    placements.record_placement(node=node, model_id=tiny_model.pk, status="ready", bytes_done=size)
    placements.record_placement(node=node, model_id=tiny_model.pk, status="ready", bytes_done=size)
    row = Placement.objects.get()
    assert (row.status, row.bytes_done, row.error) == (PlacementStatus.READY, size, "")
    ready = entries(action="model.placement").get()  # once, not per report
    assert ready.outcome == "ok" and ready.actor is None and "gpu-1" in str(ready.detail)


def test_a_failure_keeps_the_agents_sentence_and_is_audited(fleet_mode, tiny_model, admin) -> None:
    node = enroll("gpu-1").node
    placements.place_model(model=tiny_model, node=node, user=admin)
    reason = "The file fetched from the hub has sha256 0000…, not the one asked for."
    placements.record_placement(node=node, model_id=tiny_model.pk, status="failed", error=reason)
    row = Placement.objects.get()
    assert (row.status, row.error) == (PlacementStatus.FAILED, reason)
    assert placements.placements_of(model=tiny_model) == [
        {"node": "gpu-1", "status": "failed", "error": reason, "bytes_done": 0}
    ]
    failed = entries(action="model.placement").get()
    assert failed.outcome == "failed" and reason in str(failed.detail)


@pytest.mark.parametrize(
    ("model_id", "status"),
    [(10**9, "ready"), ("1", "ready"), (True, "ready"), (None, "fetching"), ("self", "exploded")],
)
def test_reports_the_hub_cannot_use_are_ignored_safely(
    fleet_mode, tiny_model, admin, model_id, status
) -> None:
    node = enroll("gpu-1").node
    placements.place_model(model=tiny_model, node=node, user=admin)
    model_id = tiny_model.pk if model_id == "self" else model_id
    assert placements.record_placement(node=node, model_id=model_id, status=status) is None
    assert Placement.objects.get().status == PlacementStatus.PENDING


def test_a_report_from_another_node_does_not_touch_this_nodes_placement(
    fleet_mode, tiny_model, admin
) -> None:
    mine, other = enroll("gpu-1").node, enroll("gpu-2").node
    placements.place_model(model=tiny_model, node=mine, user=admin)
    assert placements.record_placement(node=other, model_id=tiny_model.pk, status="ready") is None
    assert Placement.objects.get().status == PlacementStatus.PENDING


def test_removing_from_a_connected_node_waits_for_it_to_delete_its_copy(
    fleet_mode, commit, tiny_model, admin
) -> None:
    node = enroll("gpu-1", connected_via=HUB_CHANNEL).node
    placements.place_model(model=tiny_model, node=node, user=admin)
    placements.record_placement(node=node, model_id=tiny_model.pk, status="ready")
    channel = listen(node)
    with commit():
        removing = placements.remove_placement(model=tiny_model, node=node, user=admin)
    assert removing is not None and removing.status == PlacementStatus.REMOVING
    assert received(channel) == {"type": protocol.UNPLACE, "model_id": tiny_model.pk}
    assert placements.placement_specs(node=node) == []  # a reconnect would not bring it back
    # Late progress does not bring it back either.
    placements.record_placement(node=node, model_id=tiny_model.pk, status="ready")
    assert Placement.objects.get().status == PlacementStatus.REMOVING
    placements.record_placement(
        node=node, model_id=tiny_model.pk, status=protocol.PLACEMENT_REMOVED
    )
    assert not Placement.objects.exists()
    assert entries(action="model.unplace").get().actor == admin


def test_removing_from_a_node_that_is_not_connected_is_done_at_once(
    fleet_mode, commit, tiny_model, admin
) -> None:
    node = enroll("gpu-1").node  # never connected: its next welcome simply omits the model
    placements.place_model(model=tiny_model, node=node, user=admin)
    with commit():
        assert placements.remove_placement(model=tiny_model, node=node, user=admin) is None
    assert not Placement.objects.exists()
    with pytest.raises(placements.PlacementRefused) as refused:
        placements.remove_placement(model=tiny_model, node=node, user=admin)
    assert refused.value.status == 404 and "not deployed to node gpu-1" in refused.value.reason


def test_retiring_a_model_takes_it_off_every_node(fleet_mode, commit, tiny_model, admin) -> None:
    online = enroll("gpu-1", connected_via=HUB_CHANNEL).node
    away = enroll("gpu-2").node
    for node in (online, away):
        placements.place_model(model=tiny_model, node=node, user=admin)
        placements.record_placement(node=node, model_id=tiny_model.pk, status="ready")
    channel = listen(online)
    with commit():
        catalog_services.retire_model(model=tiny_model, user=admin)
    assert received(channel) == {"type": protocol.UNPLACE, "model_id": tiny_model.pk}
    left = Placement.objects.get()
    assert (left.node, left.status) == (online, PlacementStatus.REMOVING)
    assert placements.placement_specs(node=online) == []
    assert placements.placement_specs(node=away) == []
    assert all("retired" in str(e.detail) for e in entries(action="model.unplace"))


def test_embedded_mode_shows_the_model_on_this_machine(tiny_model, settings) -> None:
    settings.NODE_NAME = "workstation"
    assert placements.placements_of(model=tiny_model) == [
        {"node": "workstation", "status": "ready", "error": "", "bytes_done": 0}
    ]
    tiny_model.status, tiny_model.bytes_done = ModelStatus.INSTALLING, 1234
    assert placements.placements_of(model=tiny_model)[0]["status"] == "fetching"
    tiny_model.status = ModelStatus.RETIRED
    assert placements.placements_of(model=tiny_model) == []


def test_the_deploy_choices_are_approved_nodes_without_the_model(
    fleet_mode, tiny_model, admin
) -> None:
    placed, free = enroll("gpu-1").node, enroll("gpu-2").node
    enroll("gpu-3", approve=False)
    placements.place_model(model=tiny_model, node=placed, user=admin)
    assert placements.deployable_nodes(model=tiny_model) == [free]
