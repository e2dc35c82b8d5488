"""``POST /api/models`` with ``"node"``: the file is resolved and installed ON that node.

The hub is OpsDash's ASGI app under uvicorn (``tests.fleet.test_agent.Hub``) and the agent the
real ``Agent`` with its own model root; the install runs the catalog's pipeline on the node
(copy while hashing, sniff, metadata, backend, trial load in a real runner, rename) and the
hub's model becomes ready from the node's ``installed`` report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.fleet.agent import Agent
from opsdash.fleet.models import Node, NodeStatus, Placement, PlacementStatus
from tests.fleet.test_agent import (  # noqa: F401 (fixtures)
    NAME,
    Hub,
    enrolled_and_approved,
    fleet_mode,
    hub,
    make_agent,
    node_token,
    running,
    until,
)
from tests.fleet.test_routing import make_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def node_agent(hub: Hub, tmp_path: Path, roots: Path) -> Agent:  # noqa: F811
    return make_agent(hub, tmp_path, token=node_token(), model_roots=(roots,))


class Answer:
    def __init__(self, status_code: int, text: str) -> None:
        self.status_code, self.text = status_code, text

    def json(self) -> Any:
        return json.loads(self.text)


async def post(hub: Hub, path: str, body: dict[str, Any], secret: str) -> Answer:  # noqa: F811
    """An HTTP POST to the live hub (its views then tell the node on the hub's own loop)."""

    def send() -> Answer:
        request = urllib.request.Request(
            hub.url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read().decode())

    return await asyncio.to_thread(send)


async def linked_agent(hub: Hub, tmp_path: Path, roots: Path) -> Agent:  # noqa: F811
    return await database_sync_to_async(node_agent)(hub, tmp_path, roots)


async def settled(model_id: int) -> LocalModel:
    return await until(
        lambda: (
            LocalModel.objects.filter(pk=model_id).exclude(status=ModelStatus.INSTALLING).afirst()
        ),
        timeout=120,
        what="the install on the node to end",
    )


def partials(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "agent-models" / ".partial"
    return list(folder.iterdir()) if folder.exists() else []


async def test_an_agent_installs_a_file_from_its_own_root_and_the_hub_model_becomes_ready(
    hub,  # noqa: F811
    tmp_path,
    tiny_gguf_path,
    admin,
):
    roots = tmp_path / "node-roots"
    roots.mkdir()
    source = roots / "tiny-on-node.gguf"
    shutil.copy(tiny_gguf_path, source)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    secret = (await database_sync_to_async(create_token)(user=admin, name="t")).secret
    agent = await linked_agent(hub, tmp_path, roots)
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        answer = await post(
            hub,
            "/api/models",
            {"source": "path", "path": str(source), "node": NAME, "name": "Tiny on gpu01"},
            secret,
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == ModelStatus.INSTALLING
        model = await settled(answer.json()["id"])
        assert model.status == ModelStatus.READY, model.error
        placement = await until(
            lambda: Placement.objects.filter(model=model, status=PlacementStatus.READY).afirst(),
            what="the placement to be ready",
        )
        # Only on that node: another one cannot fetch it from the hub, and is told why.
        await database_sync_to_async(make_node)("gpu02")
        other = await post(hub, f"/api/models/{model.pk}/placements", {"node": "gpu02"}, secret)
    assert model.sha256 == sha256
    assert model.size_bytes == source.stat().st_size
    assert (model.format, model.architecture, model.backend) == ("gguf", "llama", "llama_cpp")
    assert model.parameter_count and model.context_length
    assert model.metadata["size_bytes"] == source.stat().st_size
    assert model.file_path == ""  # nothing of it on the hub
    assert placement.error == ""
    held = agent.store.get(model.pk)
    assert held is not None and held.checked and held.name == "Tiny on gpu01"
    assert Path(held.path).parent == tmp_path / "agent-models"
    assert hashlib.sha256(Path(held.path).read_bytes()).hexdigest() == sha256
    assert source.exists()  # copied, not moved
    assert partials(tmp_path) == []
    assert other.status_code == 409, other.text
    assert "exists only there" in other.json()["detail"]
    assert f"node {NAME}" in other.json()["detail"]


async def test_a_path_outside_the_nodes_roots_fails_with_a_sentence_and_leaves_no_partial(
    hub,  # noqa: F811
    tmp_path,
    tiny_gguf_path,
    admin,
):
    roots, elsewhere = tmp_path / "node-roots", tmp_path / "elsewhere"
    roots.mkdir()
    elsewhere.mkdir()
    outside = elsewhere / "tiny.gguf"
    shutil.copy(tiny_gguf_path, outside)
    secret = (await database_sync_to_async(create_token)(user=admin, name="t")).secret
    agent = await linked_agent(hub, tmp_path, roots)
    async with running(agent):
        await enrolled_and_approved(agent, hub)
        answer = await post(
            hub, "/api/models", {"source": "path", "path": str(outside), "node": NAME}, secret
        )
        assert answer.status_code == 202, answer.text
        model = await settled(answer.json()["id"])
        placement = await until(
            lambda: Placement.objects.filter(model=model, status=PlacementStatus.FAILED).afirst(),
            what="the placement to fail",
        )
    assert model.status == ModelStatus.FAILED
    assert model.error.startswith(f"On node {NAME}: {outside} is outside the folders")
    assert str(roots) in model.error
    assert placement.error == model.error
    assert agent.store.get(model.pk) is None
    assert partials(tmp_path) == []
    assert list((tmp_path / "agent-models").glob("*.gguf")) == []


# ----------------------------------------------------------------------------- refusals


def _post(client: Any, secret: str, **body: Any) -> Any:
    body = {"source": "path", "path": "/models/x.gguf"} | body
    return client.post(
        "/api/models", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )


def test_node_is_refused_in_embedded_mode_and_for_unknown_pending_or_offline_nodes(
    client, admin, settings
):
    secret = create_token(user=admin, name="t").secret
    settings.FLEET = False
    embedded = _post(client, secret, node=NAME)
    assert embedded.status_code == 400
    assert "fleet mode" in embedded.json()["detail"]

    settings.FLEET = True
    unknown = _post(client, secret, node="nowhere")
    assert unknown.status_code == 409
    assert "no node named 'nowhere'" in unknown.json()["detail"]
    make_node("waiting", status=NodeStatus.PENDING)
    pending = _post(client, secret, node="waiting")
    assert pending.status_code == 409
    assert "waiting for approval" in pending.json()["detail"]
    make_node("gone", status=NodeStatus.OFFLINE, seen_ago=600)
    offline = _post(client, secret, node="gone")
    assert offline.status_code == 409
    assert "Node gone is offline" in offline.json()["detail"]
    bad = _post(client, secret, node="gone", sha256="xyz")
    assert bad.status_code == 409  # the node is checked first
    assert not LocalModel.objects.exists()
    assert not Node.objects.filter(name=NAME).exists()
