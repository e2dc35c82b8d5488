"""The savings pages: who sees them, what they say, and the admin forms behind them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.core.models import AuditEntry
from opsdash.savings.models import CostingChange, Price
from tests.fixtures.personas import client_for
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db

PAGES = ["/savings/", "/savings/prices/", "/savings/workflows/drafts/"]
API = ["/api/savings/summary", "/api/savings/export.csv"]


@pytest.fixture
def drafts():  # type: ignore[no-untyped-def]
    price("acme", "chat-1", "0.15", "0.60", start=timezone.now() - timedelta(days=60))
    flow = workflow("drafts", "acme", "chat-1", name="Drafts")
    finished_run(flow, local_model(), prompt_tokens=2000, completion_tokens=1000)
    return flow


def test_operators_get_403_on_every_savings_page_and_endpoint(as_operator: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    for url in PAGES + API:
        assert as_operator.get(url).status_code == 403, url


def test_anonymous_visitors_are_sent_to_sign_in_and_scripts_get_401(client: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    for url in API:
        assert client.get(url).status_code == 401


def test_managers_see_the_savings_pages(as_manager: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    for url in PAGES + API:
        assert as_manager.get(url).status_code == 200, url
    html = as_manager.get("/savings/").content.decode()
    assert "API spend avoided" in html and "Drafts" in html
    assert "$0.0009" in html  # 2000 × 150 + 1000 × 600 nano-USD avoided
    assert "estimated" in html
    assert "savings.css" in html and "uPlot.iife.min.js" in html
    assert "Add a price" not in as_manager.get("/savings/prices/").content.decode()


def test_managers_read_workflows_and_prices_but_cannot_change_them(
    as_manager: Client, drafts
) -> None:  # type: ignore[no-untyped-def]
    listed = as_manager.get("/api/workflows")
    assert listed.status_code == 200 and "drafts" in {w["slug"] for w in listed.json()["items"]}
    created = as_manager.post("/api/workflows", {"name": "Mine"}, content_type="application/json")
    assert created.status_code == 403
    assert as_manager.post("/savings/prices/add/", {"provider": "x"}).status_code == 403
    row = Price.objects.first()
    assert row is not None
    assert as_manager.post(f"/savings/prices/{row.pk}/close/").status_code == 403
    assert as_manager.post("/savings/workflows/drafts/costing/", {}).status_code == 403


def test_an_unpriced_workflow_reads_unpriced_not_zero(as_manager: Client) -> None:
    finished_run(workflow("notes", name="Notes"), local_model())
    html = as_manager.get("/savings/").content.decode()
    row = html[html.index("Notes") :]
    row = row[: row.index("</tr>")]
    assert "unpriced" in row and "$0.00</span>" not in row
    detail = as_manager.get("/savings/workflows/notes/").content.decode()
    assert "unpriced" in detail


def test_a_reversed_range_on_the_page_says_so(as_manager: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    response = as_manager.get("/savings/?from=2025-05-10&to=2025-05-01")
    assert response.status_code == 400
    assert "The date range is reversed" in response.content.decode()


def test_the_workflow_page_breaks_down_by_local_model(as_manager: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    finished_run(drafts, local_model("second-model"), prompt_tokens=10, completion_tokens=10)
    html = as_manager.get("/savings/workflows/drafts/").content.decode()
    assert "By local model" in html and "tiny-llama" in html and "second-model" in html
    assert "Latest runs, as costed" in html and "$0.15 / $0.60" in html
    assert "/savings/workflows/drafts/edit/" not in html  # managers read only


def test_an_admin_adds_a_price_from_the_price_book(as_admin: Client, admin) -> None:  # type: ignore[no-untyped-def]
    response = as_admin.post(
        "/savings/prices/add/",
        {"provider": "acme", "model": "chat-7", "input_price": "1.20", "output_price": "4"},
    )
    assert response.status_code == 302
    row = Price.objects.get(model="chat-7")
    assert (row.input_nusd_per_mtok, row.created_by) == (1_200_000_000, admin)
    page = as_admin.get(response["Location"]).content.decode()
    assert "chat-7" in page and "$1.20" in page


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_price": "-3"}, "cannot be negative"),
        ({"output_price": "100000"}, "not believable"),
        ({"currency": "EUR"}, "kept in USD"),
        ({"effective_from": "tomorrow"}, "must be a date"),
    ],
)
def test_a_bad_price_form_is_refused_with_the_reason(as_admin: Client, changes, message) -> None:  # type: ignore[no-untyped-def]
    typed = {"provider": "acme", "model": "chat-7", "input_price": "1", "output_price": "2"}
    response = as_admin.post("/savings/prices/add/", typed | changes)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Price.objects.filter(model="chat-7").exists()


def test_an_admin_closes_a_price(as_admin: Client) -> None:
    row = price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=1))
    assert as_admin.post(f"/savings/prices/{row.pk}/close/").status_code == 302
    row.refresh_from_db()
    assert row.effective_to is not None
    assert AuditEntry.objects.filter(action="price.close").exists()


def test_an_admin_changes_a_workflows_baseline_and_electricity(as_admin: Client, drafts) -> None:  # type: ignore[no-untyped-def]
    response = as_admin.post(
        "/savings/workflows/drafts/costing/",
        {
            "baseline_provider": "openai",
            "baseline_model": "gpt-4o",
            "electricity_usd_per_kwh": "0.30",
        },
        follow=True,
    )
    assert "earlier runs keep their figures" in response.content.decode()
    change = CostingChange.objects.filter(workflow=drafts).latest("effective_from")
    assert (change.baseline_model, change.electricity_nusd_per_kwh) == ("gpt-4o", 300_000_000)
    bad = as_admin.post(
        "/savings/workflows/drafts/costing/",
        {"baseline_provider": "openai", "baseline_model": "", "electricity_usd_per_kwh": ""},
        follow=True,
    )
    assert "both the provider and the model" in bad.content.decode()


def test_outsiders_with_no_role_are_refused(outsider) -> None:  # type: ignore[no-untyped-def]
    client = client_for(outsider)
    assert client.get("/savings/").status_code == 403
    assert client.get("/api/savings/summary").status_code == 403


def test_an_empty_ledger_shows_zeros_without_errors(as_manager: Client) -> None:
    for url in ("/savings/", "/savings/?range=year", "/savings/prices/"):
        response = as_manager.get(url)
        assert response.status_code == 200
    html = as_manager.get("/savings/").content.decode()
    assert 'data-testid="runs">0<' in html


def test_an_admin_creates_a_workflow_with_its_baseline_through_the_api(as_admin: Client) -> None:
    body = {"name": "Support bot", "baseline_provider": "openai", "baseline_model": "gpt-4o-mini"}
    response = as_admin.post("/api/workflows", body, content_type="application/json")
    assert response.status_code == 201
    assert response.json() == {
        "name": "Support bot",
        "slug": "support-bot",
        "description": "",
        "baseline_provider": "openai",
        "baseline_model": "gpt-4o-mini",
        "archived": False,
        "archived_at": None,
    }
