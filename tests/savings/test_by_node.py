"""Savings split by the node that served each run: the summary's ``nodes``, ``?node=`` on the
API, the CSV and the pages, the rollups' node dimension, and ``/metrics`` labelled by node."""

from __future__ import annotations

import csv
import importlib
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest

from opsdash.catalog.models import LocalModel
from opsdash.runs.ledger import run_totals
from opsdash.runs.models import Run, RunStatus, Workflow
from opsdash.runs.services import finish_run
from opsdash.savings.metrics import SavingsCollector
from opsdash.savings.models import DailyRollup, WorkflowDailyRollup
from opsdash.savings.rollups import rebuild_rollups
from opsdash.telemetry.metrics import TelemetryCollector, render
from tests.savings.factories import local_model, price, started_run, workflow

pytestmark = pytest.mark.django_db

MONEY = ("avoided_usd", "local_cost_usd", "net_usd")
COUNTS = ("runs", "prompt_tokens", "completion_tokens", "unpriced_runs")


def node_run(flow: Workflow, model: LocalModel, node: str, **kwargs: Any) -> Run:
    """A run served by ``node`` (as routing records it when it starts), then finalized."""
    started_at = kwargs.pop("started_at", None)
    run = started_run(flow, model, started_at=started_at)
    Run.objects.filter(pk=run.pk).update(node=node)
    usage = {
        "prompt_tokens": kwargs.pop("prompt_tokens", 1000),
        "completion_tokens": kwargs.pop("completion_tokens", 500),
        "cpu_seconds": kwargs.pop("cpu_seconds", 2.0),
        "total_ms": 1500.0,
    }
    return finish_run(
        run_id=run.pk, status=kwargs.pop("status", RunStatus.OK), output="ok", usage=usage
    )


@pytest.fixture
def fleet_ledger() -> dict[str, int]:
    """Runs over a week on three nodes and one unrecorded (from before nodes were recorded),
    two workflows (one unpriced), prices with odd nano-dollar results; the runs per node."""
    now = timezone.now()
    price("acme", "chat-1", "0.137", "0.611", start=now - timedelta(days=60))
    drafts = workflow("drafts", "acme", "chat-1", name="Drafts")
    notes = workflow("notes", name="Notes")
    small, big = local_model("small"), local_model("big")
    nodes = ["gpu-a", "gpu-b", "gpu-c", ""]
    counts: dict[str, int] = dict.fromkeys(nodes, 0)
    for i in range(22):
        node = nodes[i % 4] if i % 5 else "gpu-a"
        node_run(
            drafts if i % 3 else notes,
            small if i % 2 else big,
            node,
            started_at=now - timedelta(days=i % 7, minutes=i),
            prompt_tokens=1001 + 17 * i,
            completion_tokens=3 + 7 * i,
            status=RunStatus.ERROR if i == 7 else RunStatus.OK,
            cpu_seconds=0.13 * i + 0.01,
        )
        counts[node] += 1
    return counts


def _summary(client: Client, query: str = "range=30d") -> dict[str, Any]:
    response = client.get(f"/api/savings/summary?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def _csv(client: Client, query: str = "range=30d") -> list[dict[str, str]]:
    response = client.get(f"/api/savings/export.csv?{query}")
    assert response.status_code == 200, response.content
    # Streamed: the body is the joined chunks (a StreamingHttpResponse has no .content).
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def _rollup_rows() -> dict[tuple[object, ...], tuple[int, ...]]:
    fields = ("runs", "ok_runs", "unpriced_runs", "prompt_tokens", "avoided_nusd", "net_nusd")
    rows = {
        ("m", r.day, r.workflow_id, r.model_id, r.node): tuple(getattr(r, f) for f in fields)
        for r in DailyRollup.objects.all()
    }
    rows.update(
        {
            ("w", r.day, r.workflow_id, r.node): tuple(getattr(r, f) for f in fields)
            for r in WorkflowDailyRollup.objects.all()
        }
    )
    return rows


def test_the_summary_lists_each_node_and_the_nodes_add_up_to_the_totals_to_the_nano_dollar(
    as_manager: Client, fleet_ledger: dict[str, int]
) -> None:
    data = _summary(as_manager)
    lines = {line["node"]: line for line in data["nodes"]}
    assert {node: line["runs"] for node, line in lines.items()} == fleet_ledger
    assert data["nodes"][0]["node"] == "gpu-a"  # the busiest first
    for line in data["nodes"]:
        assert set(line) >= {"node", "energy_joules", *MONEY, *COUNTS}
    for key in MONEY:
        parts = [Decimal(line[key]) for line in data["nodes"]]
        assert sum(parts) == Decimal(data[key]), key
        assert all(Decimal(line[key]).as_tuple().exponent == -9 for line in data["nodes"])
    for key in COUNTS:
        assert sum(line[key] for line in data["nodes"]) == data[key], key
    # Not a vacuous sum: the nodes' money differs, and each node has priced runs.
    assert len({line["avoided_usd"] for line in data["nodes"]}) == len(lines)
    assert data["node"] is None


def test_node_restricts_the_totals_workflows_and_csv_to_that_nodes_runs(
    as_manager: Client, fleet_ledger: dict[str, int]
) -> None:
    everything = _summary(as_manager)
    only_b = _summary(as_manager, "range=30d&node=gpu-b")
    line_b = next(line for line in everything["nodes"] if line["node"] == "gpu-b")
    assert only_b["node"] == "gpu-b"
    assert only_b["runs"] == fleet_ledger["gpu-b"] == line_b["runs"]
    assert [line["node"] for line in only_b["nodes"]] == ["gpu-b"]
    for key in MONEY:
        assert only_b[key] == line_b[key]
    assert sum(w["runs"] for w in only_b["workflows"]) == fleet_ledger["gpu-b"]

    rows = _csv(as_manager, "range=30d&node=gpu-b")
    assert {row["node"] for row in rows[:-1]} == {"gpu-b"}
    assert rows[-1]["day"] == "TOTAL" and int(rows[-1]["runs"]) == fleet_ledger["gpu-b"]
    assert rows[-1]["net_usd"] == only_b["net_usd"]
    response = as_manager.get("/api/savings/export.csv?range=30d&node=gpu-b")
    assert "-gpu-b.csv" in response["Content-Disposition"]


def test_the_csv_has_a_node_column_whose_rows_add_up_per_node(
    as_manager: Client, fleet_ledger: dict[str, int]
) -> None:
    rows = _csv(as_manager)
    assert rows[0].keys() >= {"day", "workflow", "local_model", "node"}
    per_node: dict[str, int] = {}
    for row in rows[:-1]:
        per_node[row["node"]] = per_node.get(row["node"], 0) + int(row["runs"])
    assert per_node == fleet_ledger
    summary = _summary(as_manager)
    assert rows[-1]["local_cost_usd"] == summary["local_cost_usd"]


def test_a_node_with_no_costed_run_is_refused_with_the_nodes_that_have_runs(
    as_manager: Client, fleet_ledger: dict[str, int]
) -> None:
    for url in ("/api/savings/summary", "/api/savings/export.csv"):
        response = as_manager.get(f"{url}?range=30d&node=gpu-z")
        assert response.status_code == 404
        sentence = response.json()["detail"]
        assert "gpu-z" in sentence and "gpu-a, gpu-b, gpu-c" in sentence
    response = as_manager.get("/api/savings/summary?node=" + "n" * 64)
    assert response.status_code == 400
    assert "63 characters" in response.json()["detail"]


def test_rebuilding_the_rollups_gives_the_rows_kept_run_by_run_per_node(
    fleet_ledger: dict[str, int],
) -> None:
    incremental = _rollup_rows()
    assert {key[-1] for key in incremental} == set(fleet_ledger)
    rebuild_rollups()
    assert _rollup_rows() == incremental


def test_the_migration_splits_rows_kept_without_a_node_and_merges_them_back(
    fleet_ledger: dict[str, int],
) -> None:
    migration = importlib.import_module("opsdash.savings.migrations.0005_rollup_node")
    by_node = _rollup_rows()
    migration.merge_nodes(apps, None)
    merged = _rollup_rows()
    assert {key[-1] for key in merged} == {""}
    assert sum(v[0] for k, v in merged.items() if k[0] == "w") == sum(fleet_ledger.values())
    migration.split_by_node(apps, None)
    assert _rollup_rows() == by_node


def test_the_savings_pages_show_a_by_node_table_and_filter_by_node(
    as_manager: Client, fleet_ledger: dict[str, int]
) -> None:
    page = as_manager.get("/savings/?range=30d").content.decode()
    table = page[page.index('data-testid="nodes"') :]
    assert all(f'data-node="{node}"' in table for node in fleet_ledger)
    assert "unrecorded" in table
    assert 'data-testid="node-filter"' in page and '<option value="gpu-c"' in page

    filtered = as_manager.get("/savings/?range=30d&node=gpu-c").content.decode()
    assert 'data-testid="node-filtered">gpu-c<' in filtered
    table = filtered[filtered.index('data-testid="nodes"') :]
    assert 'data-node="gpu-c"' in table and 'data-node="gpu-a"' not in table
    assert "node=gpu-c" in filtered[filtered.index('data-testid="csv"') - 300 :][:400]

    detail = as_manager.get("/savings/workflows/drafts/?range=30d&node=gpu-a").content.decode()
    table = detail[detail.index('data-testid="nodes"') :]
    assert 'data-node="gpu-a"' in table and 'data-node="gpu-b"' not in table

    refused = as_manager.get("/savings/?range=30d&node=gpu-z")
    assert refused.status_code == 400 and "gpu-z" in refused.content.decode()


def test_one_hub_scrape_labels_the_ledger_and_savings_families_by_the_serving_node(
    settings, fleet_ledger: dict[str, int]
) -> None:
    settings.TELEMETRY_HOST = "hub-1"
    text = render(TelemetryCollector(lambda: [], run_totals), SavingsCollector()).decode()
    runs: dict[str, float] = {}
    savings: dict[str, float] = {}
    for line in text.splitlines():
        for prefix, into in (("opsdash_runs_total{", runs), ("opsdash_savings_runs{", savings)):
            if line.startswith(prefix):
                host = line.split('host="', 1)[1].split('"', 1)[0]
                into[host] = into.get(host, 0) + float(line.rsplit(" ", 1)[1])
    # The unrecorded runs count under the host that answered the scrape.
    expected = {("hub-1" if node == "" else node): n for node, n in fleet_ledger.items()}
    assert runs == expected
    assert savings == expected


def test_unrecorded_runs_and_the_hosts_own_runs_share_one_series(settings) -> None:
    settings.TELEMETRY_HOST = "gpu-a"
    flow, model = workflow("drafts"), local_model("tiny")
    node_run(flow, model, "gpu-a")
    node_run(flow, model, "")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SavingsCollector())
    text = generate_latest(registry).decode()
    assert text.count('opsdash_savings_runs{host="gpu-a",workflow="drafts"}') == 1
    assert 'opsdash_savings_runs{host="gpu-a",workflow="drafts"} 2.0' in text
    ledger = render(TelemetryCollector(lambda: [], run_totals)).decode()
    assert 'opsdash_runs_total{host="gpu-a",model="tiny",status="ok"} 2.0' in ledger
