"""/api/savings/summary, /api/savings/export.csv and the price book under /api/savings/prices.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.
Filters are ``from`` and ``to`` (report days, inclusive, ``YYYY-MM-DD``), ``range`` (``7d``,
``30d``, ``90d``, ``365d``, ``month``, ``last_month``, ``year``) and ``workflow`` (a slug); the
same parser serves the pages, so a query string means the same thing everywhere. ``node`` (a
node's name, ``Run.node``) restricts every figure to the runs that node served.
"""

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, responses
from opsdash.savings import export, pricebook, reports
from opsdash.savings.filters import FilterError, Filters, parse_filters
from opsdash.savings.forecast import forecast
from opsdash.savings.models import Price
from opsdash.savings.money import nano_to_str
from opsdash.typing import AuthedRequest

router = Router(tags=["savings"])


class SavingsFilters(Schema):
    # Strings, not dates: the shared parser answers a bad date with a sentence, not a 422.
    start: str | None = Field(None, alias="from", description="first report day, YYYY-MM-DD")
    end: str | None = Field(None, alias="to", description="last report day, inclusive")
    range: str | None = Field(None, description="7d, 30d, 90d, 365d, month, last_month, year")
    workflow: str | None = Field(None, description="a workflow slug")
    node: str | None = Field(None, description="a node's name: only the runs it served")


def _filters(request: HttpRequest) -> Filters:
    # The raw query string, not the parsed schema: the pages parse it with the same function,
    # and a reversed range must get the same sentence in both.
    try:
        return parse_filters(request.GET)
    except FilterError as exc:
        raise HttpError(exc.status, str(exc)) from exc


# The filters are parsed by the pages' parser: a bad date or range is a 400, an unknown workflow
# or a node with no costed run a 404.
FILTERED = responses({200: dict[str, Any]}, 400, 404, 422)


@router.get("/summary", response=FILTERED, auth=api_auth(Cap.VIEW_SAVINGS))
def summary(request: HttpRequest, filters: Query[SavingsFilters]) -> dict[str, Any]:
    """Avoided API spend, local energy cost and net saving, overall, per workflow and per node
    (``nodes``, whose lines add up to the totals), and this month's ``forecast`` (for the
    same workflow and node; see its ``method``)."""
    selected = _filters(request)
    data = reports.overview(selected).as_json()
    data["forecast"] = forecast(workflow=selected.workflow, node=selected.node).as_json()
    return data


class CsvStream(StreamingHttpResponse):
    """A CSV written as it is read, under ASGI (uvicorn) as under WSGI (the test client).

    Django's ASGI handler reads a synchronous iterator whole, into a list, before sending a
    byte (``StreamingHttpResponse.__aiter__``). Here each chunk is made in the request's
    thread, the one holding its database connection and the open cursor, as the server sends
    the one before.
    """

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = iter(self.streaming_content)  # type: ignore[arg-type]  # ours is synchronous
        pull = sync_to_async(_next_chunk, thread_sensitive=True)
        while (chunk := await pull(chunks)) is not None:
            yield chunk


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


@router.get(
    "/export.csv",
    response=responses({200: str}, 400, 404, 422),
    auth=api_auth(Cap.VIEW_SAVINGS),
    openapi_extra={"responses": {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}},
)
def export_csv(request: HttpRequest, filters: Query[SavingsFilters]) -> HttpResponseBase:
    """One row per day × workflow × local model × node, then a TOTAL row equal to the
    summary; streamed (rows are written as they are read)."""
    selected = _filters(request)
    response = CsvStream(export.csv_chunks(selected), content_type="text/csv; charset=utf-8")
    name = f"opsdash-savings-{selected.start}-{selected.end}"
    if selected.workflow is not None:
        name += f"-{selected.workflow.slug}"
    if selected.node:
        # A node's name is a DNS label (letters, digits, '-', '.'); anything else stays out of
        # the header.
        name += "-" + "".join(c for c in selected.node if c.isalnum() or c in "-._")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def price_json(price: Price) -> dict[str, Any]:
    return {
        "id": price.pk,
        "provider": price.provider,
        "model": price.model,
        "currency": price.currency,
        "input_usd_per_mtok": nano_to_str(price.input_nusd_per_mtok),
        "output_usd_per_mtok": nano_to_str(price.output_nusd_per_mtok),
        "cached_input_usd_per_mtok": (
            nano_to_str(price.cached_input_nusd_per_mtok)
            if price.cached_input_nusd_per_mtok is not None
            else None
        ),
        # Null: no batch price, so batch runs are priced at the interactive rate.
        "batch_input_usd_per_mtok": _unit_or_none(price.batch_input_nusd_per_mtok),
        "batch_output_usd_per_mtok": _unit_or_none(price.batch_output_nusd_per_mtok),
        "effective_from": price.effective_from.isoformat(),
        "effective_to": price.effective_to.isoformat() if price.effective_to else None,
        "source": price.source,
        "note": price.note,
    }


def _unit_or_none(nusd_per_mtok: int | None) -> str | None:
    return nano_to_str(nusd_per_mtok) if nusd_per_mtok is not None else None


class PriceFilters(Schema):
    provider: str | None = None
    model: str | None = None
    current: bool = False


class PriceOut(Schema):
    id: int
    provider: str
    model: str
    currency: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    cached_input_usd_per_mtok: str | None
    batch_input_usd_per_mtok: str | None
    batch_output_usd_per_mtok: str | None
    effective_from: str
    effective_to: str | None
    source: str
    note: str


class PriceList(Schema):
    items: list[PriceOut]
    count: int


@router.get("/prices", response=responses({200: PriceList}, 422), auth=api_auth(Cap.VIEW_WORKFLOWS))
def list_prices(request: HttpRequest, filters: Query[PriceFilters]) -> dict[str, Any]:
    """The price book; ``current=true`` keeps the rows in effect now."""
    rows = Price.objects.all()
    if filters.provider:
        rows = rows.filter(provider=pricebook.normalize_provider(filters.provider))
    if filters.model:
        rows = rows.filter(model=pricebook.normalize_model(filters.model))
    if filters.current:
        from django.utils import timezone

        now = timezone.now()
        rows = rows.filter(effective_from__lte=now).exclude(effective_to__lte=now)
    items = [price_json(p) for p in rows]
    return {"items": items, "count": len(items)}


class PriceIn(Schema):
    provider: str
    model: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    cached_input_usd_per_mtok: str = ""
    batch_input_usd_per_mtok: str = Field(
        "", description="blank: batch runs are priced at the interactive rate"
    )
    batch_output_usd_per_mtok: str = ""
    currency: str = "USD"
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    note: str = ""


@router.post(
    "/prices",
    response=responses({201: PriceOut}, *BODY_STATUSES),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def add_price(request: AuthedRequest, payload: PriceIn) -> Any:
    """Add an admin price row (closing the open admin row of that model at its start)."""
    try:
        price = pricebook.add_price(
            price=pricebook.PriceInput(
                provider=payload.provider,
                model=payload.model,
                input_price=payload.input_usd_per_mtok,
                output_price=payload.output_usd_per_mtok,
                cached_input_price=payload.cached_input_usd_per_mtok,
                batch_input_price=payload.batch_input_usd_per_mtok,
                batch_output_price=payload.batch_output_usd_per_mtok,
                currency=payload.currency,
                effective_from=payload.effective_from,
                effective_to=payload.effective_to,
                note=payload.note,
            ),
            user=request.user,
        )
    except pricebook.PriceRefused as exc:
        raise HttpError(400, exc.reason) from exc
    return Status(201, price_json(price))
