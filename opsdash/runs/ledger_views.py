"""The Runs page (``/runs/``): every run of every source and person, for admins.

Filters are GET parameters (a shareable URL), the totals are the filter's, pages go by keyset
and the CSV streams the same filter. Operators keep their own runs in the playground's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.catalog.models import LocalModel
from opsdash.fleet.models import Node
from opsdash.runs import ledger
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.typing import AuthedRequest


def _key_model() -> type[Model]:
    """The gateway's key model, reached through the run's reverse relation so that ``runs``
    does not import the gateway app (which builds on ``runs``)."""
    call = Run._meta.get_field("gateway_call").related_model
    return call._meta.get_field("key").related_model  # type: ignore[return-value]


def _cursor(request: AuthedRequest, name: str) -> int | None:
    text = request.GET.get(name, "")
    return int(text) if text.isdigit() and len(text) < 19 else None


def _choices(filters: ledger.LedgerFilters) -> dict[str, Any]:
    """The form's lists: tens of rows each (never a scan of the runs)."""
    keys = (
        _key_model()._default_manager.select_related("workflow").order_by("workflow__slug", "name")
    )
    nodes = {str(settings.NODE_NAME), *Node.objects.values_list("name", flat=True)}
    if filters.node:
        nodes.add(filters.node)
    return {
        "workflows": Workflow.objects.order_by("name"),
        "keys": keys,
        "models": LocalModel.objects.order_by("name").only("pk", "name", "status"),
        "nodes": sorted(nodes),
        "usernames": get_user_model()
        .objects.order_by("username")
        .values_list("username", flat=True),
        "statuses": RunStatus.values,
        "sources": RunSource.values,
    }


def _form_times(filters: ledger.LedgerFilters) -> dict[str, str]:
    """The from/to inputs' values (``datetime-local`` needs a minute): a ``to`` day shows as
    its last minute, which names the same end."""
    shown = "%Y-%m-%dT%H:%M"
    start, end = filters.start, filters.end
    return {
        "form_from": timezone.localtime(start).strftime(shown) if start else "",
        "form_to": timezone.localtime(end - timedelta(seconds=1)).strftime(shown) if end else "",
    }


@requires(Cap.VIEW_LEDGER)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    filters = ledger.parse_ledger_filters(request.GET)
    runs = ledger.ledger_runs(filters)
    page = ledger.ledger_page(
        runs, after=_cursor(request, "after"), before=_cursor(request, "before")
    )
    context = {
        "filters": filters,
        "totals": ledger.ledger_totals(runs),
        "page": page,
        "time_zone": timezone.get_current_timezone_name(),
        **_form_times(filters),
        **_choices(filters),
    }
    return render(request, "runs/ledger.html", context)


class _CsvStream(StreamingHttpResponse):
    """A CSV written as it is read, under ASGI as under WSGI: Django's ASGI handler would list a
    synchronous iterator whole before sending a byte, so each chunk is made in the request's
    thread (the one holding the open cursor) while the one before is sent. The savings export
    does the same (``opsdash.savings.api.CsvStream``; ``runs`` may not import savings)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = iter(self.streaming_content)  # type: ignore[arg-type]  # ours is synchronous
        pull = sync_to_async(_next_chunk, thread_sensitive=True)
        while (chunk := await pull(chunks)) is not None:
            yield chunk


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


@requires(Cap.VIEW_LEDGER)
@require_GET
def export_csv(request: AuthedRequest) -> HttpResponseBase:
    filters = ledger.parse_ledger_filters(request.GET)
    if filters.errors:
        # A download that silently ignored a filter would total the wrong runs.
        return HttpResponse(
            " ".join(filters.errors), status=400, content_type="text/plain; charset=utf-8"
        )
    run_url = request.build_absolute_uri(reverse("runs:run", args=[0])).replace("/0/", "/{id}/")
    chunks = ledger.csv_chunks(ledger.ledger_runs(filters), run_url=run_url)
    response = _CsvStream(chunks, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="opsdash-runs-{stamp}.csv"'
    return response


@requires(Cap.VIEW_LEDGER)
@require_GET
def run_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    """Anyone's run, as its owner sees it in the history, with who or what made it."""
    run = get_object_or_404(
        Run.objects.select_related("model", "workflow", "user", "gateway_call__key", "cost"),
        pk=pk,
    )
    return render(request, "playground/run.html", {"run": run, "ledger_view": True})
