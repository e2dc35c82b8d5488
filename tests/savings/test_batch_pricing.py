"""Batch traffic (runs from the Batch API, ``source="batch"``) priced at the baseline's batch
rate where the price book has one, and shown apart on the pages, the API and the CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.services import finish_run
from opsdash.savings import catalogue
from opsdash.savings.days import report_today
from opsdash.savings.models import (
    ROLLUP_FIGURES,
    DailyRollup,
    Price,
    PriceSource,
    RunCost,
    WorkflowDailyRollup,
)
from opsdash.savings.pricebook import PriceInput, PriceRefused, add_price
from opsdash.savings.recompute import recompute_savings
from opsdash.savings.reports import FIGURE_FIELDS
from opsdash.savings.rollups import rebuild_rollups
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = pytest.mark.django_db

BATCH_COLUMNS = [
    "batch_runs",
    "batch_prompt_tokens",
    "batch_completion_tokens",
    "batch_avoided_nusd",
    "batch_net_nusd",
]


def batch_run(
    flow: Workflow,
    model: LocalModel,
    *,
    started_at: datetime | None = None,
    prompt_tokens: int = 1000,
    completion_tokens: int = 500,
    status: RunStatus = RunStatus.OK,
) -> Run:
    """A run the Batch API worker would make, finalized through ``runs.services``."""
    run = Run.objects.create(model=model, workflow=flow, source=RunSource.BATCH, prompt="hi")
    if started_at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=started_at)
    return finish_run(
        run_id=run.pk,
        status=status,
        output="ok",
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cpu_seconds": 2.0,
            "total_ms": 1500.0,
        },
    )


def _package_row(provider: str, model: str) -> Price:
    return Price.objects.get(
        provider=provider, model=model, source=PriceSource.PACKAGE, effective_to__isnull=True
    )


# ----------------------------------------------------------------------------- pricing


def test_a_batch_run_is_priced_at_half_of_gpt_4o_minis_rate(seeded_prices) -> None:  # type: ignore[no-untyped-def]
    flow = workflow("classify", "openai", "gpt-4o-mini")
    model = local_model()
    interactive = finished_run(flow, model, prompt_tokens=1000, completion_tokens=500)
    batch = batch_run(flow, model, prompt_tokens=1000, completion_tokens=500)

    costs = {c.run_id: c for c in RunCost.objects.all()}
    assert costs[interactive.pk].avoided_nusd == 1000 * 150 + 500 * 600  # $0.15 / $0.60
    assert costs[batch.pk].avoided_nusd == 1000 * 75 + 500 * 300  # $0.075 / $0.30
    assert costs[batch.pk].avoided_nusd * 2 == costs[interactive.pk].avoided_nusd
    assert costs[batch.pk].batch_rate and not costs[interactive.pk].batch_rate
    assert costs[batch.pk].price_id == costs[interactive.pk].price_id  # the same row
    assert costs[batch.pk].net_nusd == costs[batch.pk].avoided_nusd - costs[batch.pk].local_nusd


def test_an_openai_model_the_package_has_no_batch_price_for_is_seeded_at_half(
    seeded_prices,
) -> None:  # type: ignore[no-untyped-def]
    row = _package_row("openai", "o1-mini")
    assert row.batch_input_nusd_per_mtok is not None
    assert row.batch_input_nusd_per_mtok * 2 == row.input_nusd_per_mtok
    assert row.batch_output_nusd_per_mtok is not None
    assert row.batch_output_nusd_per_mtok * 2 == row.output_nusd_per_mtok
    assert "OpenAI's Batch API is 50% off" in row.note


def test_an_anthropic_model_gets_the_batch_price_genai_prices_has_for_it(seeded_prices) -> None:  # type: ignore[no-untyped-def]
    haiku = _package_row("anthropic", "claude-haiku-4-5")  # $1 / $5, batch $0.50 / $2.50
    assert (haiku.batch_input_nusd_per_mtok, haiku.batch_output_nusd_per_mtok) == (
        500_000_000,
        2_500_000_000,
    )
    assert "batch price from genai-prices" in haiku.note
    # Anthropic is not given the OpenAI discount: a model without package batch data has none.
    assert not _package_row("anthropic", "claude-3-haiku").has_batch_price

    run = batch_run(workflow("extract", "anthropic", "claude-haiku-4-5"), local_model())
    cost = RunCost.objects.get(run=run)
    assert cost.batch_rate and cost.avoided_nusd == 1000 * 500 + 500 * 2500


def test_a_batch_run_whose_price_row_has_no_batch_price_is_priced_at_the_interactive_rate(
    seeded_prices,  # type: ignore[no-untyped-def]
) -> None:
    flow = workflow("drafts", "anthropic", "claude-3-haiku")  # $0.25 / $1.25, no batch price
    run = batch_run(flow, local_model())
    cost = RunCost.objects.get(run=run)
    assert cost.priced and not cost.batch_rate
    assert cost.avoided_nusd == 1000 * 250 + 500 * 1250

    # An admin row without batch prices wins over the package's and falls back the same way.
    price("openai", "gpt-4o-mini", "1.00", "2.00", start=timezone.now() - timedelta(days=1))
    other = batch_run(workflow("tags", "openai", "gpt-4o-mini"), local_model("other"))
    cost = RunCost.objects.select_related("price").get(run=other)
    assert cost.price is not None and cost.price.source == PriceSource.ADMIN
    assert not cost.batch_rate and cost.avoided_nusd == 1000 * 1000 + 500 * 2000


def test_an_admin_row_takes_both_batch_prices_or_neither(admin) -> None:  # type: ignore[no-untyped-def]
    row = add_price(
        price=PriceInput(
            provider="acme",
            model="chat-1",
            input_price="2",
            output_price="8",
            batch_input_price="1",
            batch_output_price="4",
        ),
        user=admin,
    )
    assert (row.batch_input_nusd_per_mtok, row.batch_output_nusd_per_mtok) == (10**9, 4 * 10**9)
    with pytest.raises(PriceRefused, match="Give both batch prices"):
        add_price(
            price=PriceInput(
                provider="acme",
                model="chat-2",
                input_price="2",
                output_price="8",
                batch_input_price="1",
            ),
            user=admin,
        )
    with pytest.raises(PriceRefused, match="batch output price cannot be negative"):
        add_price(
            price=PriceInput(
                provider="acme",
                model="chat-2",
                input_price="2",
                output_price="8",
                batch_input_price="1",
                batch_output_price="-4",
            ),
            user=admin,
        )
    assert not Price.objects.filter(model="chat-2").exists()


def test_the_price_book_page_and_api_show_and_accept_batch_prices(
    as_admin: Client, as_manager: Client
) -> None:
    added = as_admin.post(
        "/savings/prices/add/",
        {
            "provider": "acme",
            "model": "chat-1",
            "input_price": "2",
            "output_price": "8",
            "batch_input_price": "1",
            "batch_output_price": "4",
            "currency": "USD",
        },
    )
    assert added.status_code == 302
    row = Price.objects.get(model="chat-1")
    assert row.has_batch_price and row.batch_output_nusd_per_mtok == 4 * 10**9
    page = as_admin.get("/savings/prices/?q=chat").content.decode()
    assert 'name="batch_input_price"' in page and "$1.00 / $4.00" in page

    one_alone = as_admin.post(
        "/savings/prices/add/",
        {
            "provider": "acme",
            "model": "chat-2",
            "input_price": "2",
            "output_price": "8",
            "batch_output_price": "4",
            "currency": "USD",
        },
    )
    assert one_alone.status_code == 400
    assert "Give both batch prices" in one_alone.content.decode()

    body = {
        "provider": "acme",
        "model": "chat-3",
        "input_usd_per_mtok": "2",
        "output_usd_per_mtok": "8",
    }
    plain = as_admin.post("/api/savings/prices", body, content_type="application/json")
    assert plain.status_code == 201 and plain.json()["batch_input_usd_per_mtok"] is None
    page = as_admin.get("/savings/prices/?q=chat-3").content.decode()
    assert "interactive rate" in page  # blank: batch runs at the interactive rate
    refused = as_admin.post(
        "/api/savings/prices",
        body | {"model": "chat-4", "batch_input_usd_per_mtok": "1"},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "Give both batch prices" in refused.json()["detail"]
    listed = as_manager.get("/api/savings/prices?model=chat-1").json()["items"]
    assert listed[0]["batch_input_usd_per_mtok"] == "1.000000000"
    assert listed[0]["batch_output_usd_per_mtok"] == "4.000000000"


def test_filling_batch_prices_gives_the_package_rows_of_an_existing_book_their_batch_rates(
    seeded_prices,  # type: ignore[no-untyped-def]
) -> None:
    """A book seeded before the batch columns (what the migration meets) gets them filled."""
    expected = {
        p.pk: (p.batch_input_nusd_per_mtok, p.batch_output_nusd_per_mtok)
        for p in Price.objects.filter(source=PriceSource.PACKAGE)
    }
    Price.objects.update(batch_input_nusd_per_mtok=None, batch_output_nusd_per_mtok=None)
    filled = catalogue.fill_batch_prices(Price)
    assert filled == sum(1 for v in expected.values() if v[0] is not None) and filled > 20
    after = {
        p.pk: (p.batch_input_nusd_per_mtok, p.batch_output_nusd_per_mtok)
        for p in Price.objects.filter(source=PriceSource.PACKAGE)
    }
    assert after == expected
    assert _package_row("openai", "gpt-4o-mini").batch_input_nusd_per_mtok == 75_000_000


# ----------------------------------------------------------------------------- shown apart


@pytest.fixture
def mixed() -> dict[str, Any]:
    """Interactive and batch runs of two workflows over three days, one batch run failed."""
    now = timezone.now()
    price("acme", "chat-1", "2", "8", start=now - timedelta(days=60))
    Price.objects.filter(model="chat-1").update(
        batch_input_nusd_per_mtok=10**9, batch_output_nusd_per_mtok=4 * 10**9
    )
    drafts, tags = workflow("drafts", "acme", "chat-1"), workflow("tags", "acme", "chat-1")
    small = local_model("small")
    for i in range(6):
        when = now - timedelta(days=i % 3, minutes=i)
        finished_run(drafts if i % 2 else tags, small, started_at=when, prompt_tokens=100 + i)
        batch_run(
            drafts,
            small,
            started_at=when,
            prompt_tokens=200 + i,
            completion_tokens=50 + i,
            status=RunStatus.ERROR if i == 4 else RunStatus.OK,
        )
    costs = RunCost.objects.filter(run__source=RunSource.BATCH).select_related("run")
    return {
        "drafts": drafts,
        "runs": 6,
        "prompt_tokens": sum(200 + i for i in range(6)),
        "completion_tokens": sum(50 + i for i in range(6)),
        "avoided": sum(c.avoided_nusd for c in costs),
        "net": sum(c.net_nusd for c in costs),
    }


def _nano(text: str) -> int:
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * 10**9 + int(fraction.ljust(9, "0"))
    return -value if text.startswith("-") else value


def test_the_summary_shows_batch_traffic_apart_overall_and_per_workflow(
    as_manager: Client, mixed: dict[str, Any]
) -> None:
    data = as_manager.get("/api/savings/summary?range=30d").json()
    assert mixed["avoided"] > 0
    assert data["batch"] == {
        "runs": mixed["runs"],
        "prompt_tokens": mixed["prompt_tokens"],
        "completion_tokens": mixed["completion_tokens"],
        "avoided_usd": f"{mixed['avoided'] // 10**9}.{mixed['avoided'] % 10**9:09d}",
        "net_usd": data["batch"]["net_usd"],
    }
    assert _nano(data["batch"]["net_usd"]) == mixed["net"]
    assert data["runs"] == 12  # the batch runs are among the runs, not beside them
    by_slug = {line["slug"]: line for line in data["workflows"]}
    assert by_slug["drafts"]["batch"]["runs"] == 6 and by_slug["tags"]["batch"]["runs"] == 0
    assert by_slug["tags"]["batch"]["avoided_usd"] == "0.000000000"


def test_the_csv_gains_batch_columns_at_the_end_adding_up_to_the_summary(
    as_manager: Client, mixed: dict[str, Any]
) -> None:
    response = as_manager.get("/api/savings/export.csv?range=30d")
    text = b"".join(response.streaming_content).decode()
    header = next(csv.reader(io.StringIO(text)))
    assert header[:16][-1] == "pricing"  # existing columns keep their places
    assert header[16:] == [
        "batch_runs",
        "batch_prompt_tokens",
        "batch_completion_tokens",
        "batch_avoided_usd",
        "batch_net_usd",
    ]
    rows = list(csv.DictReader(io.StringIO(text)))
    total, lines = rows[-1], rows[:-1]
    assert total["day"] == "TOTAL"
    assert int(total["batch_runs"]) == sum(int(r["batch_runs"]) for r in lines) == 6
    assert _nano(total["batch_avoided_usd"]) == mixed["avoided"]
    assert _nano(total["batch_net_usd"]) == mixed["net"]
    assert int(total["batch_prompt_tokens"]) == mixed["prompt_tokens"]
    summary = as_manager.get("/api/savings/summary?range=30d").json()
    assert total["batch_avoided_usd"] == summary["batch"]["avoided_usd"]


def test_the_savings_pages_say_how_much_of_it_was_batch(
    as_manager: Client, mixed: dict[str, Any]
) -> None:
    page = as_manager.get("/savings/?range=30d").content.decode()
    assert 'data-testid="batch-share"' in page and "Of which batch" in page
    assert "6 batch" in page  # the drafts workflow's line
    detail = as_manager.get("/savings/workflows/drafts/?range=30d").content.decode()
    assert "Of which batch" in detail
    assert 'data-testid="batch-rate"' in detail  # its latest runs name the batch price used
    assert "batch runs: $1.00 in · $4.00 out" in detail


def test_a_report_without_batch_runs_shows_no_batch_line(as_manager: Client) -> None:
    price("acme", "chat-1", "2", "8", start=timezone.now() - timedelta(days=5))
    finished_run(workflow("drafts", "acme", "chat-1"), local_model())
    page = as_manager.get("/savings/?range=30d").content.decode()
    assert 'data-testid="batch-share"' not in page
    assert as_manager.get("/api/savings/summary").json()["batch"]["runs"] == 0


# ----------------------------------------------------------------------------- rollups


def _batch_sums() -> dict[tuple[object, ...], tuple[int, ...]]:
    rows: dict[tuple[object, ...], tuple[int, ...]] = {
        (r.day, r.workflow_id, r.model_id): tuple(getattr(r, f) for f in BATCH_COLUMNS)
        for r in DailyRollup.objects.all()
    }
    for r in WorkflowDailyRollup.objects.all():
        rows[(r.day, r.workflow_id)] = tuple(getattr(r, f) for f in BATCH_COLUMNS)
    return rows


def test_the_figures_list_the_rollup_columns_in_their_order() -> None:
    assert list(FIGURE_FIELDS) == ROLLUP_FIGURES
    assert ROLLUP_FIGURES[-5:] == BATCH_COLUMNS


def test_rebuilt_rollups_keep_the_batch_sums_the_finalizer_made(mixed: dict[str, Any]) -> None:
    incremental = _batch_sums()
    assert sum(v[0] for k, v in incremental.items() if len(k) == 2) == 6
    rebuild_rollups()
    assert _batch_sums() == incremental


def test_recompute_reprices_batch_runs_and_keeps_their_sums_apart(
    admin,
    mixed: dict[str, Any],  # type: ignore[no-untyped-def]
) -> None:
    # The row loses its batch price (as if it never had one): recomputed, batch runs are
    # priced at the interactive rate and the batch sums follow.
    Price.objects.filter(model="chat-1").update(
        batch_input_nusd_per_mtok=None, batch_output_nusd_per_mtok=None
    )
    today = report_today()
    result = recompute_savings(start=today - timedelta(days=5), end=today, user=admin)
    assert result.changed == 6  # every batch run; the interactive ones keep their costs
    costs = RunCost.objects.filter(run__source=RunSource.BATCH)
    assert not any(c.batch_rate for c in costs)
    after = sum(c.avoided_nusd for c in costs)
    assert after == 2 * mixed["avoided"]  # the batch rate here was half the interactive one
    totals = [sum(v[i] for k, v in _batch_sums().items() if len(k) == 2) for i in range(5)]
    assert totals[0] == 6 and totals[3] == after
    before = _batch_sums()
    rebuild_rollups()
    assert _batch_sums() == before
