"""The fleet as an operator runs it: three agent processes on two hub processes, on a real
PostgreSQL and Redis; a model deployed to two nodes; runs routed and failed over; an agent
SIGKILLed mid-generation, Redis restarted, a hub restarted. After each, the ledger holds
exactly one run row per request and the fleet is healthy again by itself.

The tests of this module are one story on one fleet (the ``fleet`` fixture is module-scoped)
and run in order: each starts from the state the one before left. Timeouts are the real ones
(a node is ``unhealthy`` after OPSDASH_NODE_UNHEALTHY_SECONDS = 15 s without a heartbeat).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fixtures.tinymodels import write_tiny_gguf_llama
from tests.fleet.harness import Fleet, Response, wait_for

pytestmark = pytest.mark.fleet

#: node name → the hub it dials (two on hub 0, one on hub 1).
NODES = {"node-a": 0, "node-b": 1, "node-c": 0}
#: The two nodes the model is deployed to; node-c has no copy and must never serve it.
PLACED = ("node-a", "node-b")
SHORT = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
#: The tiny model never writes </s> and its context outlasts any test: this runs until stopped.
ENDLESS = {"prompt": "Once upon a time", "max_tokens": 100_000, "temperature": 0}
#: How long a lost node may take to be noticed: 15 s without a heartbeat, plus one sweep.
LOST_WITHIN_SECONDS = 25
RECOVER_WITHIN_SECONDS = 45


@dataclass
class Story:
    """What the tests of this module share: the fleet, the model, and every run request sent
    (so the ledger can be checked against it)."""

    fleet: Fleet
    model_id: int = 0
    requests: int = 0
    served_by: list[str] = field(default_factory=list)

    def run(self, body: dict[str, Any], *, hub: int, timeout: float = 60) -> Response:
        self.requests += 1
        answer = self.fleet.api(
            "POST", "/api/runs", json={"model": self.model_id, **body}, hub=hub, timeout=timeout
        )
        return answer

    def run_ok(self, *, hub: int) -> str:
        """A short run through hub ``hub`` that must succeed; returns the node that served it."""
        answer = self.run(SHORT, hub=hub)
        assert answer.status == 200, answer
        run = answer.json()
        assert run["status"] == "ok", run
        assert run["usage"]["completion_tokens"] > 0, run
        node = answer.headers.get("X-OpsDash-Node")
        assert node, f"no X-OpsDash-Node header: {dict(answer.headers)}"
        assert run["node"] == node, (run["node"], node)
        assert node in PLACED, f"{node} served a model it has no copy of"
        self.served_by.append(node)
        return node

    def assert_ledger_complete(self) -> None:
        """One run row per request, seen the same through both hubs: nothing lost, nothing
        recorded twice."""
        for hub in range(len(self.fleet.hubs)):
            listed = self.fleet.api("GET", f"/api/runs?model={self.model_id}&limit=1", hub=hub)
            assert listed.status == 200, listed
            assert listed.json()["count"] == self.requests, (hub, listed.json()["count"])
        running = self.fleet.api("GET", "/api/runs?status=running&limit=1")
        assert running.json()["count"] == 0, running.json()

    def wait_healthy(self, names: tuple[str, ...] = tuple(NODES)) -> None:
        """Every node in ``names`` healthy, as both hubs see it."""

        def all_healthy() -> bool:
            for hub in range(len(self.fleet.hubs)):
                nodes = self.fleet.nodes(hub=hub)
                if any(nodes.get(n, {}).get("status") != "healthy" for n in names):
                    return False
            return True

        wait_for(
            all_healthy,
            timeout=RECOVER_WITHIN_SECONDS,
            what=f"nodes {', '.join(names)} healthy on every hub",
            interval=0.5,
        )

    def placements(self) -> dict[str, dict[str, Any]]:
        model = self.fleet.api("GET", f"/api/models/{self.model_id}")
        assert model.status == 200, model
        return {p["node"]: p for p in model.json()["placements"]}


@pytest.fixture(scope="module")
def story(fleet: Fleet) -> Story:
    return Story(fleet=fleet)


def test_three_agents_on_two_hubs_enroll_are_approved_and_healthy_on_both_hubs(
    story: Story,
) -> None:
    fleet = story.fleet
    for name, hub in NODES.items():
        fleet.start_agent(name, hub=hub)
    for name in NODES:
        # Enrolled through one hub, listed by both: one database.
        pending = fleet.wait_node(name, status="pending", hub=1 - NODES[name], timeout=60)
        assert pending["cpu_count"] and pending["cpu_count"] > 0, pending
        assert pending["memory_total_bytes"] > 0, pending
    for name in NODES:
        # Approved through the hub its agent is not connected to: the word reaches the
        # agent's socket through Redis.
        fleet.approve(name, hub=1 - NODES[name])
    story.wait_healthy()
    listed = fleet.nodes(hub=1)
    assert set(listed) >= set(NODES), listed
    for name in NODES:
        assert listed[name]["last_seen"], listed[name]


def test_a_model_installed_on_the_hub_deployed_to_two_nodes_becomes_ready_on_both(
    story: Story,
) -> None:
    fleet = story.fleet
    path = write_tiny_gguf_llama(fleet.hub_model_root / "tiny-llama-long.gguf", long_context=True)
    installed = fleet.api("POST", "/api/models", json={"source": "path", "path": str(path)})
    assert installed.status == 202, installed
    story.model_id = installed.json()["id"]

    def ready() -> dict[str, Any] | None:
        model = fleet.api("GET", f"/api/models/{story.model_id}").json()
        assert model["status"] != "failed", model
        return model if model["status"] == "ready" else None

    wait_for(ready, timeout=120, what="the model installed on the hub")
    for name in PLACED:
        placed = fleet.api(
            "POST", f"/api/models/{story.model_id}/placements", json={"node": name}, hub=1
        )
        assert placed.status == 202, placed

    def both_ready() -> dict[str, dict[str, Any]] | None:
        found = story.placements()
        failed = {n: p["error"] for n, p in found.items() if p["status"] == "failed"}
        assert not failed, failed
        return found if all(found.get(n, {}).get("status") == "ready" for n in PLACED) else None

    placements = wait_for(both_ready, timeout=120, what="the model ready on node-a and node-b")
    assert "node-c" not in placements
    # Each node keeps its own copy, fetched from the hub and checked against the sha256.
    for name in PLACED:
        copies = [p for p in fleet.agents[name].models_dir.rglob("*") if p.is_file()]
        assert any(p.stat().st_size == path.stat().st_size for p in copies), copies


def test_runs_through_either_hub_are_served_by_a_node_with_the_model(story: Story) -> None:
    for hub in (0, 1, 0, 1):
        story.run_ok(hub=hub)
    assert set(story.served_by) <= set(PLACED)
    by_node = story.fleet.api("GET", f"/api/runs?node={story.served_by[0]}&limit=500")
    assert all(r["node"] == story.served_by[0] for r in by_node.json()["items"])
    story.assert_ledger_complete()


def test_an_agent_killed_mid_generation_ends_its_run_node_lost_and_others_take_new_runs(
    story: Story,
) -> None:
    fleet = story.fleet
    answers: list[Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(story.run(ENDLESS, hub=1, timeout=120)), daemon=True
    )
    thread.start()

    def generating() -> dict[str, Any] | None:
        items = fleet.api("GET", f"/api/runs?model={story.model_id}&status=running").json()
        return items["items"][0] if items["count"] == 1 and items["items"][0]["node"] else None

    running = wait_for(generating, timeout=30, what="the long run started on a node")
    victim = running["node"]
    survivor = next(n for n in PLACED if n != victim)
    time.sleep(2)  # tokens are flowing to the hub
    killed_at = time.monotonic()
    fleet.kill_agent(victim)

    fleet.wait_node(victim, status="unhealthy", hub=0, timeout=LOST_WITHIN_SECONDS)
    thread.join(timeout=LOST_WITHIN_SECONDS + 30)
    assert answers, "POST /api/runs never answered after its node was killed"
    assert time.monotonic() - killed_at < LOST_WITHIN_SECONDS + 15
    lost = answers[0]
    assert lost.status == 503, lost
    assert lost.headers.get("Retry-After"), dict(lost.headers)
    run = lost.json()["run"]
    assert run["status"] == "error", run
    assert run["error_code"] == "node_lost", run
    assert "node lost" in run["error"].lower(), run
    assert run["node"] == victim, run
    assert run["text"], "the text generated before the node was lost is kept"
    assert run["usage"]["completion_tokens"] > 0, run

    # New requests, through either hub, go to the node that is left, with no error.
    for hub in (0, 1):
        assert story.run_ok(hub=hub) == survivor
    story.assert_ledger_complete()

    # Plugged back in, the node comes back by itself: its saved credential, its copy of the model.
    fleet.start_agent(victim, hub=NODES[victim])
    story.wait_healthy()
    wait_for(
        lambda: story.placements()[victim]["status"] == "ready",
        timeout=RECOVER_WITHIN_SECONDS,
        what=f"the model ready again on {victim}",
    )


def test_after_redis_restarts_the_fleet_is_healthy_by_itself_and_runs_cross_hubs(
    story: Story,
) -> None:
    fleet = story.fleet
    fleet.redis.restart(down_seconds=1)
    story.wait_healthy()
    # Drain node-b: every run must then go to node-a, whose socket is on hub 0, so a run sent
    # to hub 1 reaches it through the restarted Redis.
    drained = fleet.api("POST", "/api/nodes/node-b/drain", hub=1)
    assert drained.status == 200, drained
    wait_for(
        lambda: fleet.nodes(hub=1)["node-b"]["status"] == "draining",
        timeout=10,
        what="node-b draining",
    )
    for hub in (1, 0, 1):
        assert story.run_ok(hub=hub) == "node-a"
    resumed = fleet.api("POST", "/api/nodes/node-b/resume", hub=0)
    assert resumed.status == 200, resumed
    story.wait_healthy()
    story.assert_ledger_complete()


def test_after_a_hub_restarts_its_agents_reconnect_and_the_fleet_serves_again(
    story: Story,
) -> None:
    fleet = story.fleet
    on_hub0 = tuple(n for n, hub in NODES.items() if hub == 0)
    starts = {name: fleet.agents[name].starts for name in on_hub0}
    fleet.restart_hub(0)
    story.wait_healthy()
    for name in on_hub0:
        # The same agent process, reconnected by itself: nobody restarted it.
        assert fleet.agents[name].alive, f"agent {name} exited when its hub restarted"
        assert fleet.agents[name].starts == starts[name]
    for hub in (0, 1, 0, 1):
        story.run_ok(hub=hub)
    story.assert_ledger_complete()
