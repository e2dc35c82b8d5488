"""/api/savings/summary and /api/savings/export.csv: one aggregation, so equal to the page."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.runs.models import RunStatus
from opsdash.savings.days import report_day
from opsdash.savings.filters import parse_filters
from opsdash.savings.money import nano_to_str
from opsdash.savings.reports import overview
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db

SUMMARY_KEYS = {
    "avoided_usd",
    "local_cost_usd",
    "net_usd",
    "runs",
    "prompt_tokens",
    "completion_tokens",
    "energy_joules",
    "unpriced_runs",
}


@pytest.fixture
def ledger() -> dict[str, object]:
    """Three workflows over a week: priced, unpriced, and one named like a spreadsheet formula."""
    now = timezone.now()
    price("acme", "chat-1", "0.15", "0.60", start=now - timedelta(days=60))
    drafts = workflow("drafts", "acme", "chat-1", name="Drafts")
    notes = workflow("notes", name="Notes")
    evil = workflow("evil", "acme", "chat-1", name='=HYPERLINK("http://x","click")')
    small, big = local_model("small"), local_model("-big")
    for i in range(15):
        finished_run(
            [drafts, notes, evil][i % 3],
            small if i % 2 else big,
            started_at=now - timedelta(days=i % 7, minutes=i),
            prompt_tokens=1000 + 13 * i,
            completion_tokens=7 * i,
            status=RunStatus.ERROR if i == 5 else RunStatus.OK,
            cpu_seconds=0.25 * i,
        )
    return {"drafts": drafts, "notes": notes, "evil": evil}


def _csv(client: Client, query: str = "range=30d") -> list[dict[str, str]]:
    response = client.get(f"/api/savings/export.csv?{query}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    # Streamed: the body is the joined chunks (a StreamingHttpResponse has no .content).
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_summary_has_the_design_shape(as_manager: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    data = as_manager.get("/api/savings/summary?range=30d").json()
    assert set(data) >= SUMMARY_KEYS
    assert data["runs"] == 15 and data["unpriced_runs"] == 5
    for key in ("avoided_usd", "local_cost_usd", "net_usd"):
        assert isinstance(data[key], str) and Decimal(data[key]).as_tuple().exponent == -9
    assert {w["slug"] for w in data["workflows"]} >= {"drafts", "notes", "evil"}
    for line in data["workflows"]:
        assert set(line) >= SUMMARY_KEYS and {"name", "slug", "baseline_model"} <= set(line)
    notes = next(w for w in data["workflows"] if w["slug"] == "notes")
    assert notes["pricing"] == "unpriced"
    assert notes["avoided_usd"] is None and notes["net_usd"] is None  # unknown, not $0
    assert Decimal(notes["local_cost_usd"]) > 0


def test_the_csv_totals_equal_the_page_and_the_api_to_the_nano_dollar(as_manager, ledger) -> None:  # type: ignore[no-untyped-def]
    rows = _csv(as_manager)
    total = rows[-1]
    assert total["day"] == "TOTAL"
    api = as_manager.get("/api/savings/summary?range=30d").json()
    page = overview(parse_filters({"range": "30d"})).totals
    assert total["avoided_usd"] == api["avoided_usd"] == nano_to_str(page.avoided_nusd)
    assert total["local_cost_usd"] == api["local_cost_usd"] == nano_to_str(page.local_nusd)
    assert total["net_usd"] == api["net_usd"] == nano_to_str(page.net_nusd)
    assert int(total["runs"]) == api["runs"] == page.runs

    html = as_manager.get("/savings/?range=30d").content.decode()
    assert nano_to_str(page.net_nusd) in html  # the exact figure sits behind the rounded one

    body = rows[:-1]
    for column in ("avoided_usd", "local_cost_usd", "net_usd"):
        cells = [Decimal(r[column]) for r in body if r[column] != "unpriced"]
        assert sum(cells, Decimal(0)) == Decimal(total[column])
    assert sum(int(r["runs"]) for r in body) == 15
    assert any(r["avoided_usd"] == "unpriced" for r in body if r["workflow"] == "notes")


def test_names_that_look_like_formulas_are_escaped_but_numbers_are_not(as_manager, ledger) -> None:  # type: ignore[no-untyped-def]
    rows = _csv(as_manager)
    evil = [r for r in rows if r["workflow"] == "evil"]
    assert evil and all(r["workflow_name"] == '\'=HYPERLINK("http://x","click")' for r in evil)
    assert {r["local_model"] for r in rows[:-1]} == {"small", "'-big"}
    for row in rows:
        for cell in (row["runs"], row["local_cost_usd"]):
            assert not cell.startswith("'")
    assert any(r["net_usd"].startswith("-") for r in rows)  # a loss stays a number


def test_filters_by_workflow_and_dates(as_manager, ledger) -> None:  # type: ignore[no-untyped-def]
    today = report_day(timezone.now())
    data = as_manager.get(f"/api/savings/summary?from={today}&to={today}&workflow=drafts").json()
    assert [w["slug"] for w in data["workflows"]] == ["drafts"]
    assert data["from"] == data["to"] == today.isoformat()
    assert 0 < data["runs"] < 15
    rows = _csv(as_manager, f"from={today}&to={today}&workflow=drafts")
    assert {r["workflow"] for r in rows[:-1]} == {"drafts"}
    assert rows[-1]["runs"] == str(data["runs"])


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("from=2025-03-10&to=2025-03-01", 400, "reversed"),
        ("from=yesterday", 400, "must be a date"),
        ("range=forever", 400, "Unknown range"),
        ("workflow=nope", 404, "no workflow"),
        ("from=2000-01-01&to=2025-01-01", 400, "at most five years"),
    ],
)
def test_bad_filters_get_a_clear_answer(
    as_manager: Client, query: str, status: int, message: str
) -> None:
    for url in (f"/api/savings/summary?{query}", f"/api/savings/export.csv?{query}"):
        response = as_manager.get(url)
        assert response.status_code == status
        assert message in response.json()["detail"]


def test_admins_manage_prices_through_the_api(as_admin: Client, as_manager: Client) -> None:
    body = {
        "provider": "acme",
        "model": "chat-9",
        "input_usd_per_mtok": "1.5",
        "output_usd_per_mtok": "2",
    }
    assert (
        as_manager.post("/api/savings/prices", body, content_type="application/json").status_code
        == 403
    )
    created = as_admin.post("/api/savings/prices", body, content_type="application/json")
    assert created.status_code == 201
    assert created.json()["input_usd_per_mtok"] == "1.500000000"
    refused = as_admin.post(
        "/api/savings/prices", body | {"currency": "GBP"}, content_type="application/json"
    )
    assert refused.status_code == 400 and "USD" in refused.json()["detail"]
    listed = as_manager.get("/api/savings/prices?provider=acme&current=true").json()
    assert [p["model"] for p in listed["items"]] == ["chat-9"]
