"""The Placements card on a model's page: where it runs, Deploy, Remove, who may."""

from __future__ import annotations

import pytest

from opsdash.core.audit import entries
from opsdash.fleet import placements
from opsdash.fleet.models import Placement, PlacementStatus
from tests.fleet.placing import enroll

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_mode(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = True
    return settings


def test_the_model_page_pulls_in_the_placements_card(as_operator, tiny_model) -> None:
    page = as_operator.get(f"/models/{tiny_model.pk}/").content.decode()
    assert f'hx-get="/models/{tiny_model.pk}/placements/"' in page


def test_embedded_the_card_says_it_runs_on_this_machine(as_admin, tiny_model, settings) -> None:
    settings.NODE_NAME = "workstation"
    card = as_admin.get(f"/models/{tiny_model.pk}/placements/").content.decode()
    assert "Runs on this machine (<strong>workstation</strong>)" in card
    assert "Deploy to" not in card


def test_in_a_fleet_the_card_lists_nodes_and_offers_the_free_ones(
    fleet_mode, as_admin, tiny_model, admin
) -> None:
    placed = enroll("gpu-1").node
    enroll("gpu-2")
    enroll("gpu-new", approve=False)
    placements.place_model(model=tiny_model, node=placed, user=admin)
    placements.record_placement(
        node=placed,
        model_id=tiny_model.pk,
        status="fetching",
        bytes_done=tiny_model.size_bytes // 2,
    )
    card = as_admin.get(f"/models/{tiny_model.pk}/placements/").content.decode()
    assert 'data-node="gpu-1"' in card and ">fetching<" in card
    assert 'aria-valuenow="50"' in card  # half the file is on the node
    assert 'hx-trigger="every 2s"' in card  # it follows the fetch
    assert '<option value="gpu-2">' in card
    assert 'value="gpu-1"' not in card.split('data-testid="deploy-form"')[1]
    assert "gpu-new" not in card  # not approved: not offered


def test_an_admin_deploys_and_removes_from_the_page(fleet_mode, as_admin, tiny_model) -> None:
    enroll("gpu-1")
    response = as_admin.post(f"/models/{tiny_model.pk}/placements/deploy/", {"node": "gpu-1"})
    assert response.status_code == 302 and response["Location"] == f"/models/{tiny_model.pk}/"
    assert Placement.objects.get().status == PlacementStatus.PENDING
    page = as_admin.get(response["Location"]).content.decode()
    assert f"Deploying “{tiny_model.name}” to gpu-1" in page

    as_admin.post(f"/models/{tiny_model.pk}/placements/gpu-1/remove/")
    assert not Placement.objects.exists()  # the node is not connected: removed at once
    assert [e.action for e in entries(action="model")][:2] == ["model.unplace", "model.place"]


def test_a_refused_deploy_shows_the_sentence(fleet_mode, as_admin, tiny_model) -> None:
    enroll("gpu-new", approve=False)
    response = as_admin.post(
        f"/models/{tiny_model.pk}/placements/deploy/", {"node": "gpu-new"}, follow=True
    )
    assert "waiting for approval" in response.content.decode()
    assert not Placement.objects.exists()


def test_an_operator_sees_the_card_without_forms_and_may_not_post(
    fleet_mode, as_operator, tiny_model
) -> None:
    enroll("gpu-1")
    card = as_operator.get(f"/models/{tiny_model.pk}/placements/").content.decode()
    assert "Not deployed to any node yet" in card and "Deploy to" not in card
    response = as_operator.post(f"/models/{tiny_model.pk}/placements/deploy/", {"node": "gpu-1"})
    assert response.status_code == 403
    assert not Placement.objects.exists()
