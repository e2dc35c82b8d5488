"""Limits that hold across hub processes: two hubs on one PostgreSQL and Redis, one agent serving
the tiny model. 200 concurrent /v1 calls split over both hubs against 50 requests per minute let
exactly 50 through, and the other 150 are OpenAI's 429 ``rate_limit_exceeded``, each a refused
run in the ledger. A key revoked through one hub is refused by the next call on the other.

The counters are rows in the database both hubs share (opsdash.limits.services), so this is the
test that they are atomic there, not only inside one process.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fixtures.tinymodels import write_tiny_gguf_llama
from tests.fleet.harness import Fleet, Response, http, wait_for

pytestmark = pytest.mark.fleet

NODE = "limits-node"
CALLS, LIMIT = 200, 50
#: A burst must be admitted inside one minute window: start it with this many seconds left.
MINUTE_LEFT_SECONDS = 40


def _model_ready_on_the_node(fleet: Fleet) -> str:
    """The tiny model installed on the hub and placed on the one agent; its /v1 id."""
    fleet.start_agent(NODE, env={"OPSDASH_QUEUE_DEPTH": str(CALLS)})
    fleet.wait_node(NODE, status="pending", timeout=60)
    fleet.approve(NODE)
    path = write_tiny_gguf_llama(fleet.hub_model_root / "tiny-llama.gguf")
    installed = fleet.api("POST", "/api/models", json={"source": "path", "path": str(path)})
    assert installed.status == 202, installed
    model_id = installed.json()["id"]

    def ready() -> dict[str, Any] | None:
        model = fleet.api("GET", f"/api/models/{model_id}").json()
        assert model["status"] != "failed", model
        return model if model["status"] == "ready" else None

    model = wait_for(ready, timeout=120, what="the model installed on the hub")
    placed = fleet.api("POST", f"/api/models/{model_id}/placements", json={"node": NODE})
    assert placed.status == 202, placed

    def placed_ready() -> bool:
        found = {
            p["node"]: p for p in fleet.api("GET", f"/api/models/{model_id}").json()["placements"]
        }
        assert found.get(NODE, {}).get("status") != "failed", found
        return found.get(NODE, {}).get("status") == "ready"

    wait_for(placed_ready, timeout=120, what=f"the model ready on {NODE}")
    return str(model["slug"])


@pytest.fixture(scope="module")
def model_slug(fleet: Fleet) -> str:
    return _model_ready_on_the_node(fleet)


def _workflow_with_key(fleet: Fleet, slug: str) -> str:
    created = fleet.api("POST", "/api/workflows", json={"name": slug, "slug": slug})
    assert created.status == 201, created
    return fleet.manage("create_api_key", slug).stdout.strip().splitlines()[-1]


def _v1(fleet: Fleet, hub: int, key: str, model: str) -> Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return http(
        "POST", fleet.hubs[hub].url + "/v1/chat/completions", json=body, token=key, timeout=120
    )


def test_200_concurrent_calls_over_two_hubs_let_exactly_50_through_a_limit_of_50(
    fleet: Fleet, model_slug: str
) -> None:
    key = _workflow_with_key(fleet, "burst")
    limited = fleet.api("PUT", "/api/workflows/burst/limits", json={"requests_per_minute": LIMIT})
    assert limited.status == 200 and limited.json()["requests_per_minute"] == LIMIT, limited
    assert _v1(fleet, 1, key, model_slug).status == 200, "warm: the model loaded on the node"
    warmed = int(time.time() // 60)
    # A fresh window for the whole burst: a later minute than the warm-up's, with time left.
    while int(time.time() // 60) == warmed or 60 - time.time() % 60 < MINUTE_LEFT_SECONDS:
        time.sleep(0.25)
    minute = int(time.time() // 60)

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        answers = list(pool.map(lambda i: _v1(fleet, i % 2, key, model_slug), range(CALLS)))

    assert int(time.time() // 60) == minute, "the burst outlasted its minute; rerun"
    statuses = Counter(a.status for a in answers)
    assert statuses == {200: LIMIT, 429: CALLS - LIMIT}, statuses
    refused = [a for a in answers if a.status == 429]
    assert {(a.json()["error"]["type"], a.json()["error"]["code"]) for a in refused} == {
        ("requests", "rate_limit_exceeded")
    }
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in refused)
    assert {a.headers["x-ratelimit-limit-requests"] for a in answers if a.status == 200} == {"50"}
    # The ledger agrees, through either hub: one run per call, refusals included.
    for hub, status, expected in ((0, "ok", LIMIT + 1), (1, "error", CALLS - LIMIT)):
        runs = fleet.api("GET", f"/api/runs?workflow=burst&status={status}&limit=500", hub=hub)
        assert runs.status == 200 and runs.json()["count"] == expected, (
            status,
            runs.json()["count"],
        )
        if status == "error":
            codes = {r["error_code"] for r in runs.json()["items"]}
            assert codes == {"rate_limit_exceeded"}, codes
    named = {int(a.headers["X-OpsDash-Run"]) for a in answers}
    assert len(named) == CALLS, "every answer names its own run"


def test_a_key_revoked_through_one_hub_is_refused_by_the_next_call_on_the_other(
    fleet: Fleet, model_slug: str
) -> None:
    key = _workflow_with_key(fleet, "revocation")
    assert _v1(fleet, 1, key, model_slug).status == 200
    cookie = fleet.sign_in("admin", hub=0)
    page = http(
        "GET", fleet.hubs[0].url + "/gateway/workflows/revocation/", headers={"Cookie": cookie}
    )
    found = re.search(r'action="(/gateway/keys/\d+/revoke/)"', page.text)
    assert found, page.text[:500]
    csrf = re.search(r"csrftoken=([^;]+)", cookie)
    assert csrf, cookie
    revoked = http(
        "POST",
        fleet.hubs[0].url + found[1],
        headers={
            "Cookie": cookie,
            "X-CSRFToken": csrf[1],
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert revoked.status == 200, revoked  # the keys page again, after the redirect

    refused = _v1(fleet, 1, key, model_slug)

    assert refused.status == 401, refused
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert "was revoked" in refused.json()["error"]["message"]
