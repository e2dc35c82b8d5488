"""The savings pages stay fast as workflows grow: a fixed number of queries, and a CSV that is
written as it is read (bench/savings.py measures the times at a million runs)."""

from __future__ import annotations

import csv
import io
import warnings
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from opsdash.accounts.services import create_token
from opsdash.asgi import application
from opsdash.savings import export
from tests.savings.factories import finished_run, local_model, price, workflow

# Session, user, groups, workflows, three rollup reads, open prices, nodes, the month's three
# sums, then the forecast's and the budgets' own few: generous, but not one per workflow.
PAGE_QUERIES = 24
SUMMARY_QUERIES = 18


def _ledger(flows: int) -> None:
    """``flows`` priced workflows with two runs each, on two local models and two days."""
    price("acme", "chat-1", "0.15", "0.60", start=timezone.now() - timedelta(days=60))
    small, big = local_model("small-model"), local_model("big-model")
    for i in range(flows):
        flow = workflow(f"flow-{i:02d}", "acme", "chat-1", name=f"Flow {i:02d}")
        finished_run(flow, small, started_at=timezone.now() - timedelta(days=1))
        finished_run(flow, big, prompt_tokens=300 + i)


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
        assert response.status_code == 200, url
        if response.streaming:
            b"".join(response.streaming_content)
    return len(queries.captured_queries)


@pytest.mark.django_db
def test_the_overview_and_the_summary_cost_the_same_queries_for_3_or_12_workflows(
    as_manager: Client,
) -> None:
    _ledger(3)
    few = {url: _queries(as_manager, url) for url in ("/savings/", "/api/savings/summary")}
    model = local_model("third-model")
    for i in range(9):
        finished_run(workflow(f"more-{i}", "acme", "chat-1"), model)
    many = {url: _queries(as_manager, url) for url in few}
    assert many == few, "a query per workflow crept into the overview"
    assert few["/savings/"] <= PAGE_QUERIES
    assert few["/api/savings/summary"] <= SUMMARY_QUERIES
    html = as_manager.get("/savings/").content.decode()
    assert html.count('class="spark-cell"><svg class="spark spark-') == 12  # one per workflow


@pytest.mark.django_db
def test_the_csv_streams_and_its_total_is_the_summarys_to_the_nano_dollar(
    as_manager: Client,
) -> None:
    _ledger(4)
    response = as_manager.get("/api/savings/export.csv?range=30d")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    summary = as_manager.get("/api/savings/summary?range=30d").json()
    total = rows[-1]
    assert total["day"] == "TOTAL" and int(total["runs"]) == summary["runs"] == 8
    for column, key in (
        ("avoided_usd", "avoided_usd"),
        ("local_cost_usd", "local_cost_usd"),
        ("net_usd", "net_usd"),
    ):
        assert total[column] == summary[key]
        assert sum(Decimal(row[column]) for row in rows[:-1]) == Decimal(summary[key])
    assert sum(int(row["prompt_tokens"]) for row in rows[:-1]) == summary["prompt_tokens"]
    # A row per day × workflow × local model: 4 workflows, each on two models on two days.
    assert len(rows) - 1 == 8
    assert [r["day"] for r in rows[:-1]] == sorted(r["day"] for r in rows[:-1])


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_first_csv_lines_are_sent_before_the_last_are_read(
    manager, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from asgiref.sync import sync_to_async

    await sync_to_async(_ledger)(5)  # 10 CSV lines
    secret = (await sync_to_async(create_token)(user=manager, name="csv")).secret
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", 2)
    read = []

    def counted(**kwargs):  # type: ignore[no-untyped-def]
        for row in real_stream_rows(**kwargs):
            read.append(row)
            yield row

    real_stream_rows = export.stream_rows
    monkeypatch.setattr(export, "stream_rows", counted)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/savings/export.csv",
        "raw_path": b"/api/savings/export.csv",
        "query_string": b"range=30d",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {secret}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    with warnings.catch_warnings():
        # Django warns when it must list a synchronous iterator whole to serve it over ASGI.
        warnings.simplefilter("error")
        start = await app.receive_output(timeout=30)
        assert start["type"] == "http.response.start" and start["status"] == 200
        first = await app.receive_output(timeout=30)
        read_at_first_chunk = len(read)
        body = first["body"]
        while True:
            message = await app.receive_output(timeout=30)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    await app.wait(timeout=5)
    assert first["body"].startswith(b"day,workflow,")
    assert read_at_first_chunk < len(read) == 10  # sent while most rows were still unread
    lines = body.decode().splitlines()
    assert len(lines) == 12 and lines[-1].startswith("TOTAL,")
