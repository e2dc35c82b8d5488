"""Which node a request goes to (opsdash.fleet.scheduler), why none can take it, and the node
every run and response names (the embedded mode's is the local host)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import AsyncClient, Client
from django.utils import timezone

from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus
from opsdash.fleet.scheduler import routable_nodes, why_unroutable
from opsdash.gateway.services import create_api_key
from opsdash.runs.models import Run, RunStatus, Workflow
from tests import factories


def make_node(
    name: str,
    model: LocalModel | None = None,
    *,
    placement: str = PlacementStatus.READY,
    error: str = "",
    status: str = NodeStatus.HEALTHY,
    draining: bool = False,
    queue_length: int = 0,
    loaded: list[Any] | None = None,
    seen_ago: float = 0.0,
) -> Node:
    """A node row as the fleet's services leave it, holding ``model`` in ``placement`` state."""
    now = timezone.now()
    node = Node.objects.create(
        name=name,
        status=status,
        draining=draining,
        approved_at=None if status == NodeStatus.PENDING else now,
        last_seen=now - timedelta(seconds=seen_ago),
        queue_length=queue_length,
        loaded=loaded or [],
    )
    if model is not None:
        Placement.objects.create(model=model, node=node, status=placement, error=error)
    return node


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


@pytest.mark.django_db
def test_the_shortest_queue_goes_first_then_the_node_with_the_model_loaded_then_the_name():
    model = factories.local_model(sha256="a" * 64)
    make_node("busy", model, queue_length=3, loaded=[model.pk])
    make_node("idle-cold", model)
    make_node("idle-warm", model, loaded=[{"model": model.pk, "pid": 41}])
    make_node("also-cold", model)

    assert names(routable_nodes(model_id=model.pk)) == [
        "idle-warm",
        "also-cold",
        "idle-cold",
        "busy",
    ]


@pytest.mark.django_db
def test_only_healthy_undrained_recently_seen_nodes_with_a_ready_placement_are_routable():
    model = factories.local_model(sha256="a" * 64)
    other = factories.local_model("other", sha256="b" * 64)
    make_node("good", model)
    make_node("draining", model, draining=True)
    make_node("drained", model, status=NodeStatus.DRAINING)
    make_node("unhealthy", model, status=NodeStatus.UNHEALTHY)
    make_node("offline", model, status=NodeStatus.OFFLINE)
    make_node("pending", model, status=NodeStatus.PENDING)
    make_node("late", model, seen_ago=settings.NODE_UNHEALTHY_SECONDS + 5)
    make_node("fetching", model, placement=PlacementStatus.FETCHING)
    make_node("failed", model, placement=PlacementStatus.FAILED, error="bad file")
    make_node("removing", model, placement=PlacementStatus.REMOVING)
    make_node("elsewhere", other)

    assert names(routable_nodes(model_id=model.pk)) == ["good"]
    assert names(routable_nodes(model_id=other.pk)) == ["elsewhere"]


@pytest.mark.django_db
def test_a_model_deployed_nowhere_is_unroutable_and_the_sentence_says_how_to_deploy_it():
    model = factories.local_model("tiny-llama", sha256="a" * 64)
    make_node("gpu-1")  # a node without the model

    reason = why_unroutable(model_id=model.pk)

    assert "“tiny-llama” is not deployed to any node" in reason
    assert f"/api/models/{model.pk}/placements" in reason


@pytest.mark.django_db
def test_placements_that_failed_or_are_on_their_way_are_named_with_their_error():
    model = factories.local_model("tiny-llama", sha256="a" * 64)
    make_node("gpu-1", model, placement=PlacementStatus.FAILED, error="The sha256 did not match.")
    make_node("gpu-2", model, placement=PlacementStatus.FETCHING)

    reason = why_unroutable(model_id=model.pk)

    assert reason.startswith("“tiny-llama” is not ready on any node")
    assert "gpu-1 it is failed (The sha256 did not match)" in reason
    assert "gpu-2 it is still fetching" in reason


@pytest.mark.django_db
def test_nodes_holding_the_model_that_take_no_requests_are_named_with_their_state():
    model = factories.local_model("tiny-llama", sha256="a" * 64)
    make_node("gpu-1", model, status=NodeStatus.OFFLINE)
    make_node("gpu-2", model, draining=True)
    make_node("gpu-3", model, seen_ago=settings.NODE_UNHEALTHY_SECONDS + 5)

    reason = why_unroutable(model_id=model.pk)

    assert "No node can serve “tiny-llama” now" in reason
    assert "gpu-1 is offline" in reason
    assert "gpu-2 is draining" in reason
    assert "gpu-3 is not heard from recently" in reason
    assert "resume a drained one" in reason


@pytest.mark.django_db
def test_an_unknown_model_is_named():
    assert why_unroutable(model_id=987654) == "There is no model 987654."


# ----------------------------------------------------------------------------- embedded mode


@pytest.fixture
def bearer(operator) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=operator, name='t').secret}"}


@pytest.mark.django_db(transaction=True)
def test_an_embedded_run_is_served_by_the_local_node_and_says_so(
    client: Client, bearer, tiny_model, settings
):
    settings.NODE_NAME = "workstation-7"
    body = {"model": tiny_model.pk, "prompt": "hello", "max_tokens": 3}

    response = client.post("/api/runs", body, content_type="application/json", **bearer)

    assert response.status_code == 200, response.content
    assert response["X-OpsDash-Node"] == "workstation-7"
    assert response.json()["node"] == "workstation-7"
    assert Run.objects.get(pk=response.json()["id"]).node == "workstation-7"
    listed = client.get("/api/runs", {"node": "workstation-7"}, **bearer).json()
    assert [item["id"] for item in listed["items"]] == [response.json()["id"]]
    assert listed["items"][0]["node"] == "workstation-7"
    assert client.get("/api/runs", {"node": "elsewhere"}, **bearer).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
async def test_v1_answers_and_streams_name_the_local_node(tiny_model, settings):
    settings.NODE_NAME = "workstation-7"
    flow = await Workflow.objects.acreate(name="Flow", slug="flow")
    issued = await sync_to_async(create_api_key)(workflow=flow, name="k", user=None)
    headers = {"Authorization": f"Bearer {issued.secret}"}
    client = AsyncClient()
    body = {"model": tiny_model.slug, "prompt": "hello", "max_tokens": 3}

    plain = await client.post(
        "/v1/completions", body, content_type="application/json", headers=headers
    )
    streamed = await client.post(
        "/v1/completions", body | {"stream": True}, content_type="application/json", headers=headers
    )

    assert plain.status_code == 200, plain.content
    assert plain["X-OpsDash-Node"] == "workstation-7"
    assert streamed.status_code == 200
    assert streamed["X-OpsDash-Node"] == "workstation-7"
    chunks = b"".join([chunk async for chunk in streamed.streaming_content])
    assert chunks.endswith(b"data: [DONE]\n\n")
    nodes = [r.node async for r in Run.objects.all()]
    assert nodes == ["workstation-7", "workstation-7"]
    assert all([r.status == RunStatus.OK async for r in Run.objects.all()])


@pytest.mark.django_db
def test_run_history_shows_each_runs_node_and_filters_by_node(as_operator, operator):
    model = factories.local_model(sha256="a" * 64)
    flow = factories.workflow("flow")
    for node in ("gpu-1", "gpu-2", "gpu-1"):
        run = factories.started_run(flow, model)
        Run.objects.filter(pk=run.pk).update(node=node, user=operator)
    on_two = Run.objects.get(node="gpu-2")

    page = as_operator.get("/playground/history/").content.decode()
    filtered = as_operator.get("/playground/history/", {"node": "gpu-2"}).content.decode()
    detail = as_operator.get(f"/playground/runs/{on_two.pk}/").content.decode()

    assert "<th>Node</th>" in page
    assert page.count('data-label="Node">gpu-1<') == 2 and 'data-label="Node">gpu-2<' in page
    assert '<option value="gpu-2" selected>' in filtered
    assert 'data-label="Node">gpu-1<' not in filtered and 'data-label="Node">gpu-2<' in filtered
    assert "<dt>Node</dt>" in detail and "?node=gpu-2" in detail
