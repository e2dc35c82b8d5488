"""Limits that hold across hub processes: two hubs on one PostgreSQL and Redis, one agent serving
the tiny model. 200 concurrent /v1 calls split over both hubs against 50 requests per minute let
exactly 50 through, and the other 150 are OpenAI's 429 ``rate_limit_exceeded``, each a refused
run in the ledger. A key revoked through one hub is refused by the next call on the other.

The counters are rows in the database both hubs share (opsdash.limits.services), so this is the
test that they are atomic there, not only inside one process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.engines import free_port
from tests.fixtures.tinymodels import write_tiny_gguf_llama
from tests.fleet.harness import (
    DEMO_PASSWORD,
    MANAGE,
    REPO,
    SECRET_KEY,
    Fleet,
    Hub,
    Response,
    _base_env,
    http,
    wait_for,
)

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


# ----------------------------------------------------------------------------- embedded mode

EMBEDDED_CALLS, EMBEDDED_LIMIT = 40, 10


def _embedded_env(data_dir: Path) -> dict[str, str]:
    """Two uvicorn processes of the embedded mode: no database or Redis URL, one data folder
    (so one SQLite file, WAL) and one secret key between them."""
    env = _base_env()
    env.update(
        OPSDASH_DATA_DIR=str(data_dir),
        OPSDASH_MODELS_DIR=str(data_dir / "models"),
        OPSDASH_MODEL_ROOTS=str(data_dir / "roots"),
        OPSDASH_SECRET_KEY=SECRET_KEY,
        OPSDASH_DEMO_PASSWORD=DEMO_PASSWORD,
        OPSDASH_ALLOWED_HOSTS="127.0.0.1,localhost",
        OPSDASH_QUEUE_DEPTH=str(EMBEDDED_CALLS),
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


@pytest.fixture
def embedded_pair(tmp_path: Path) -> Iterator[tuple[list[Hub], str, str]]:
    """Two embedded-mode processes on one SQLite file, the tiny model installed, a workflow
    limited to 10 requests per minute and its key: (processes, model id, key)."""
    data = tmp_path / "data"
    for folder in (data / "models", data / "roots", tmp_path / "logs"):
        folder.mkdir(parents=True)
    env = _embedded_env(data)
    _manage(env, "migrate", "--no-input")
    _manage(env, "bootstrap", "--demo")
    admin_token = _manage(env, "create_token", "admin")
    model = write_tiny_gguf_llama(data / "roots" / "tiny-llama.gguf")
    _manage(env, "install_model", str(model))
    hubs = []
    for index in range(2):
        port = free_port()
        hubs.append(
            Hub(
                label=f"embedded{index}",
                argv=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "opsdash.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--lifespan",
                    "on",
                    "--timeout-graceful-shutdown",
                    "4",
                ],
                env=env,
                log_path=tmp_path / "logs" / f"embedded{index}.log",
                port=port,
            )
        )
    try:
        for hub in hubs:
            hub.start()
        for hub in hubs:
            wait_for(
                lambda hub=hub: http("GET", hub.url + "/healthz", timeout=2).status == 200,
                timeout=60,
                what=f"{hub.label} answering /healthz",
            )
        models = http("GET", hubs[0].url + "/api/models", token=admin_token).json()["items"]
        slug = next(m["slug"] for m in models if m["status"] == "ready")
        created = http(
            "POST",
            hubs[0].url + "/api/workflows",
            json={"name": "embedded", "slug": "embedded"},
            token=admin_token,
        )
        assert created.status == 201, created
        key = _manage(env, "create_api_key", "embedded")
        limited = http(
            "PUT",
            hubs[1].url + "/api/workflows/embedded/limits",
            json={"requests_per_minute": EMBEDDED_LIMIT},
            token=admin_token,
        )
        assert limited.status == 200, limited
        yield hubs, slug, key
    except BaseException:
        for hub in hubs:
            print(f"===== {hub.label}\n{hub.tail()}")  # noqa: T201 (shown only on failure)
        raise
    finally:
        for hub in hubs:
            hub.terminate(timeout=10)


def test_two_embedded_processes_on_one_sqlite_file_share_the_limit_exactly(
    embedded_pair: tuple[list[Hub], str, str],
) -> None:
    hubs, slug, key = embedded_pair
    body = {"model": slug, "prompt": "hi", "max_tokens": 1}
    while 60 - time.time() % 60 < MINUTE_LEFT_SECONDS:
        time.sleep(0.25)
    minute = int(time.time() // 60)

    def call(i: int) -> Response:
        url = hubs[i % 2].url + "/v1/completions"
        return http("POST", url, json=body, token=key, timeout=120)

    with ThreadPoolExecutor(max_workers=EMBEDDED_CALLS) as pool:
        answers = list(pool.map(call, range(EMBEDDED_CALLS)))

    assert int(time.time() // 60) == minute, "the burst outlasted its minute; rerun"
    statuses = Counter(a.status for a in answers)
    assert statuses == {200: EMBEDDED_LIMIT, 429: EMBEDDED_CALLS - EMBEDDED_LIMIT}, (
        statuses,
        [a.text[:200] for a in answers if a.status not in (200, 429)][:3],
    )
    assert {a.json()["error"]["code"] for a in answers if a.status == 429} == {
        "rate_limit_exceeded"
    }
