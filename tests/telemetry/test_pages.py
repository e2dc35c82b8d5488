"""The telemetry page and the JSON API: who may see them and what they hold."""

from __future__ import annotations

import re

import pytest

from opsdash.telemetry.sampler import get_sampler
from tests.fixtures.personas import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_page_explains_the_gpu_state_and_loads_only_vendored_scripts(as_operator):
    frame = get_sampler().latest(wait=3)

    response = as_operator.get("/telemetry/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="cpu-chart"' in html and 'data-ws="/ws/telemetry/"' in html
    if frame["gpu_state"] != "ok":
        assert frame["gpu_detail"] in html.replace("&#x27;", "'")
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in sources
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], "no CDN"


def test_managers_and_visitors_do_not_get_the_page(manager):
    assert client_for(manager).get("/telemetry/").status_code == 403
    response = client_for(None).get("/telemetry/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_snapshot_is_the_latest_frame(as_operator):
    response = as_operator.get("/api/telemetry/snapshot")

    frame = response.json()
    assert response.status_code == 200
    assert {
        "type",
        "t",
        "host",
        "cpu",
        "memory",
        "disk",
        "net",
        "gpu_state",
        "gpus",
        "runners",
    } <= set(frame)
    assert frame["type"] == "frame" and frame["host"] == "testhost"
    assert frame["cpu"]["percent"] and frame["memory"]["total_bytes"] > 0


def test_the_api_refuses_scripts_without_rights(manager):
    assert client_for(None).get("/api/telemetry/snapshot").status_code == 401
    assert client_for(manager).get("/api/telemetry/snapshot").status_code == 403
    assert client_for(manager).get("/api/telemetry/history?range=1h").status_code == 403


def test_the_alerts_api_lists_thresholds_and_episodes(as_operator):
    answer = as_operator.get("/api/telemetry/alerts").json()

    assert {t["kind"] for t in answer["thresholds"]} == {
        "gpu_temperature",
        "gpu_memory",
        "ram",
        "disk_free",
        "gpu_thermal_margin",
        "gpu_throttle",
        "gpu_power_cap",
        "gpu_xid",
        "gpu_ecc",
        "gpu_retirement",
    }
    assert answer["items"] == [] and answer["count"] == 0
