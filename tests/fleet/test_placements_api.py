"""/api/models/{id}/placements and the placements in GET /api/models/{id}."""

from __future__ import annotations

import pytest

from opsdash.fleet import placements
from opsdash.fleet.models import Placement, PlacementStatus
from tests.fleet.placing import enroll

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_mode(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = True
    return settings


def _place(client, model_id: int, node: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/models/{model_id}/placements", {"node": node}, content_type="application/json"
    )


def test_an_admin_deploys_a_model_to_a_node_and_sees_it_in_the_model(
    fleet_mode, as_admin, tiny_model
) -> None:
    enroll("gpu-1")
    response = _place(as_admin, tiny_model.pk, "gpu-1")
    assert response.status_code == 202, response.content
    assert response.json() == {"node": "gpu-1", "status": "pending", "error": "", "bytes_done": 0}
    again = _place(as_admin, tiny_model.pk, "gpu-1")
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert Placement.objects.count() == 1

    detail = as_admin.get(f"/api/models/{tiny_model.pk}").json()
    assert detail["placements"] == [{"node": "gpu-1", "status": "pending", "error": ""}]


def test_the_model_json_of_the_embedded_mode_names_this_machine(
    as_operator, tiny_model, settings
) -> None:
    settings.NODE_NAME = "workstation"
    detail = as_operator.get(f"/api/models/{tiny_model.pk}").json()
    assert detail["placements"] == [{"node": "workstation", "status": "ready", "error": ""}]


@pytest.mark.parametrize(
    ("node", "status", "words"),
    [
        ("gpu-9", 404, "There is no node named 'gpu-9'"),
        ("gpu-new", 409, "waiting for approval"),
    ],
)
def test_a_deploy_that_cannot_be_made_says_why(
    fleet_mode, as_admin, tiny_model, node, status, words
) -> None:
    enroll("gpu-new", approve=False)
    response = _place(as_admin, tiny_model.pk, node)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert not Placement.objects.exists()


def test_a_deploy_in_embedded_mode_says_there_are_no_nodes(as_admin, tiny_model) -> None:
    enroll("gpu-1")
    response = _place(as_admin, tiny_model.pk, "gpu-1")
    assert response.status_code == 409 and "embedded mode" in response.json()["detail"]


def test_an_unknown_model_and_an_empty_node_name_are_refused(
    fleet_mode, as_admin, tiny_model
) -> None:
    enroll("gpu-1")
    assert _place(as_admin, 999_999, "gpu-1").status_code == 404
    empty = _place(as_admin, tiny_model.pk, "")
    assert empty.status_code == 422 and empty.json()["detail"].startswith("node:")


def test_an_operator_sees_placements_but_may_not_deploy(
    fleet_mode, as_operator, tiny_model
) -> None:
    enroll("gpu-1")
    response = _place(as_operator, tiny_model.pk, "gpu-1")
    assert response.status_code == 403
    assert not Placement.objects.exists()


def test_removing_answers_202_while_a_connected_node_deletes_and_204_when_gone(
    fleet_mode, as_admin, tiny_model, admin
) -> None:
    online = enroll("gpu-1", connected_via="specific.hub!1").node
    away = enroll("gpu-2").node
    for node in (online, away):
        placements.place_model(model=tiny_model, node=node, user=admin)

    removing = as_admin.delete(f"/api/models/{tiny_model.pk}/placements/gpu-1")
    assert removing.status_code == 202 and removing.json()["status"] == "removing"
    gone = as_admin.delete(f"/api/models/{tiny_model.pk}/placements/gpu-2")
    assert gone.status_code == 204 and gone.content == b""
    assert list(Placement.objects.values_list("node__name", "status")) == [
        ("gpu-1", PlacementStatus.REMOVING)
    ]
    missing = as_admin.delete(f"/api/models/{tiny_model.pk}/placements/gpu-2")
    assert missing.status_code == 404 and "not deployed to node gpu-2" in missing.json()["detail"]
