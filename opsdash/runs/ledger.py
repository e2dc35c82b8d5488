"""What the run ledger tells in aggregate: ``/metrics``'s totals, and the Runs page's filters,
totals, pages and CSV (every run, for admins).

The Runs page reads the costs (savings' ``RunCost``, ``Run.cost``) and gateway keys
(``GatewayCall``, ``Run.gateway_call``) through the ORM's reverse relations by name, never by
importing those apps: ``runs`` stays below them (DESIGN.md, dependency direction).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from opsdash.runs.models import Run, RunSource, RunStatus

PAGE_SIZE = 50
CSV_ROWS_PER_CHUNK = 500
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FILTER_NAMES = ("workflow", "key", "user", "model", "node", "status", "source", "from", "to")


def run_totals() -> list[dict[str, Any]]:
    """Runs and tokens by node, model slug and status: ``node, model__slug, status, runs,
    prompt_tokens, completion_tokens`` (``node`` blank for runs from before nodes were
    recorded)."""
    rows = (
        Run.objects.values("node", "model__slug", "status")
        .annotate(
            runs=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("node", "model__slug", "status")
    )
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class LedgerFilters:
    """The Runs page's filters as typed values; ``given`` keeps what was typed (for the form,
    the pager and the CSV link) and ``errors`` a sentence per value that could not be used
    (that filter is left out; the others still apply)."""

    workflow: str = ""
    key: int | None = None
    user: str = ""
    model: int | None = None
    node: str = ""
    status: str = ""
    source: str = ""
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    given: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def query(self) -> str:
        """The filters as a query string (no leading ``?``): shareable, and what the pager and
        the CSV link carry."""
        return urlencode({k: v for k, v in self.given.items() if k in FILTER_NAMES and v})

    @property
    def active(self) -> bool:
        return bool(self.query)


def _whole(name: str, text: str, errors: list[str]) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        errors.append(f"The {name} filter takes a number from the list, not “{text}”.")
        return None
    return int(text)


def _choice(name: str, text: str, choices: list[str], errors: list[str]) -> str:
    if text and text not in choices:
        errors.append(f"There is no {name} “{text}”; use one of {', '.join(choices)}.")
        return ""
    return text


def _moment(name: str, text: str, errors: list[str], *, end: bool) -> datetime | None:
    """A day (``2025-03-01``) or a local time (``2025-03-01T14:30``) in the current time zone.

    A ``to`` value covers what it names: a day up to its end, a minute up to its last second.
    """
    if not text:
        return None
    try:
        # A day first: parse_datetime (fromisoformat) would read "2025-03-01" as its midnight.
        day = parse_date(text) if len(text) == 10 else None
        moment = None if day is not None else parse_datetime(text)
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        errors.append(
            f"The “{name}” time must read like 2025-03-01 or 2025-03-01T14:30, not “{text}”."
        )
        return None
    if moment is None:
        assert day is not None
        moment = datetime(day.year, day.month, day.day)
        step = timedelta(days=1)
    else:
        step = timedelta(seconds=1) if text.count(":") >= 2 else timedelta(minutes=1)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment + step if end else moment


def parse_ledger_filters(query: Mapping[str, str]) -> LedgerFilters:
    """The filters of a GET query (``workflow`` slug, ``key`` id, ``user`` name, ``model`` id,
    ``node``, ``status``, ``source``, ``from``, ``to``); never raises: a value it cannot use is
    left out with a sentence in ``errors``."""
    given = {name: str(query.get(name, "")).strip() for name in FILTER_NAMES}
    errors: list[str] = []
    start = _moment("from", given["from"], errors, end=False)
    end = _moment("to", given["to"], errors, end=True)
    if start is not None and end is not None and start >= end:
        errors.append("The “from” time is after the “to” time; swap them.")
        start = end = None
    return LedgerFilters(
        workflow=given["workflow"],
        key=_whole("key", given["key"], errors),
        user=given["user"],
        model=_whole("model", given["model"], errors),
        node=given["node"],
        status=_choice("status", given["status"], list(RunStatus.values), errors),
        source=_choice("source", given["source"], list(RunSource.values), errors),
        start=start,
        end=end,
        given=given,
        errors=errors,
    )


def ledger_runs(filters: LedgerFilters) -> QuerySet[Run]:
    """Every run the filters select, newest first (each filter one indexed column or join)."""
    runs = Run.objects.all()
    if filters.workflow:
        runs = runs.filter(workflow__slug=filters.workflow)
    if filters.key is not None:
        runs = runs.filter(gateway_call__key_id=filters.key)
    if filters.user:
        runs = runs.filter(user__username=filters.user)
    if filters.model is not None:
        runs = runs.filter(model_id=filters.model)
    if filters.node:
        runs = runs.filter(node=filters.node)
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.source:
        runs = runs.filter(source=filters.source)
    if filters.start is not None:
        runs = runs.filter(started_at__gte=filters.start)
    if filters.end is not None:
        runs = runs.filter(started_at__lt=filters.end)
    return runs.order_by("-started_at", "-id")


@dataclass(frozen=True)
class LedgerTotals:
    """The figures of every run a filter selects (money nano-USD, energy millijoules, from the
    runs' frozen costs; a run not costed yet adds nothing to them)."""

    runs: int = 0
    ok_runs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    avoided_nusd: int = 0
    local_nusd: int = 0
    net_nusd: int = 0
    energy_mj: int = 0
    unpriced_runs: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def ledger_totals(runs: QuerySet[Run]) -> LedgerTotals:
    """The totals of ``runs`` in one query (the count the pager shows is this one's)."""
    zero = 0
    sums = runs.order_by().aggregate(
        runs=Count("id"),
        ok_runs=Count("id", filter=Q(status=RunStatus.OK)),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), zero),
        completion_tokens=Coalesce(Sum("completion_tokens"), zero),
        avoided_nusd=Coalesce(Sum("cost__avoided_nusd"), zero),
        local_nusd=Coalesce(Sum("cost__local_nusd"), zero),
        net_nusd=Coalesce(Sum("cost__net_nusd"), zero),
        energy_mj=Coalesce(Sum("cost__energy_mj"), zero),
        unpriced_runs=Count("id", filter=Q(cost__priced=False)),
    )
    return LedgerTotals(**{name: int(value) for name, value in sums.items()})


@dataclass(frozen=True)
class LedgerPage:
    """One page of runs, by keyset (the run after or before a cursor run), so the 20,000th page
    costs what the first does; ``older`` / ``newer`` are the cursors of the next pages."""

    runs: list[Run]
    older: int | None
    newer: int | None


def ledger_page(
    runs: QuerySet[Run], *, after: int | None = None, before: int | None = None
) -> LedgerPage:
    """The ``PAGE_SIZE`` runs older than run ``after`` (or newer than run ``before``, or the
    newest), with what the page shows of each joined in the same query."""
    rows = runs.select_related("model", "workflow", "user", "gateway_call__key", "cost")
    cursor_id = after if after is not None else before
    cursor = (
        Run.objects.filter(pk=cursor_id).values_list("started_at", flat=True).first()
        if cursor_id is not None
        else None
    )
    if cursor is None:
        found = list(rows[: PAGE_SIZE + 1])
        return LedgerPage(found[:PAGE_SIZE], _last_id(found), None)
    if after is not None:
        older = Q(started_at__lt=cursor) | Q(started_at=cursor, id__lt=after)
        found = list(rows.filter(older)[: PAGE_SIZE + 1])
        return LedgerPage(found[:PAGE_SIZE], _last_id(found), found[0].pk if found else None)
    newer = Q(started_at__gt=cursor) | Q(started_at=cursor, id__gt=before)
    found = list(rows.filter(newer).order_by("started_at", "id")[: PAGE_SIZE + 1])
    has_newer = len(found) > PAGE_SIZE
    page = list(reversed(found[:PAGE_SIZE]))
    return LedgerPage(page, page[-1].pk if page else None, page[0].pk if has_newer else None)


def _last_id(found: list[Run]) -> int | None:
    """The cursor of the next older page, when there is one (one row more than a page)."""
    return found[PAGE_SIZE - 1].pk if len(found) > PAGE_SIZE else None


CSV_HEADER = [
    "run",
    "started_at",
    "source",
    "status",
    "workflow",
    "key",
    "user",
    "model",
    "node",
    "prompt_tokens",
    "completion_tokens",
    "total_ms",
    "energy_joules",
    "avoided_usd",
    "local_cost_usd",
    "net_usd",
    "pricing",
    "error_code",
    "url",
]
_CSV_FIELDS = [
    "pk",
    "started_at",
    "source",
    "status",
    "workflow__slug",
    "gateway_call__key__name",
    "user__username",
    "model__name",
    "node",
    "prompt_tokens",
    "completion_tokens",
    "total_ms",
    "cost__energy_mj",
    "cost__avoided_nusd",
    "cost__local_nusd",
    "cost__net_nusd",
    "cost__priced",
    "error_code",
]


def csv_text(value: str | None) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP: prefix a quote), as the
    savings CSV writes them."""
    text = value or ""
    return "'" + text if text.startswith(FORMULA_START) else text


def usd_text(nano: int) -> str:
    """The exact decimal string the savings API and CSV write: ``-0.000001500``."""
    return f"{Decimal(nano).scaleb(-9):.9f}"


def csv_rows(runs: QuerySet[Run], *, run_url: str) -> Iterator[list[str]]:
    """One line per run, newest first, then a TOTAL line: the sum of the lines written, which
    equals the page's totals for the same filter. ``run_url`` has ``{id}`` for a run's page.

    Names are escaped, numbers written by us; an unpriced run says "unpriced" in its avoided and
    net cells (and counts 0 there); a run not costed yet has those cells empty.
    """
    yield CSV_HEADER
    runs_n = ok = prompt = completion = energy = avoided = local = net = 0
    # A server-side cursor on PostgreSQL, chunks on SQLite: the export never holds every row.
    for row in runs.values_list(*_CSV_FIELDS).iterator(chunk_size=2000):
        pk, started, source, status, flow, key, user, model, node, *figures = row
        p_tok, c_tok, total_ms, energy_mj, avoided_nusd, local_nusd, net_nusd, *rest = figures
        priced, error_code = rest
        runs_n += 1
        ok += status == RunStatus.OK
        prompt += p_tok or 0
        completion += c_tok or 0
        costed = priced is not None
        if costed:
            energy += energy_mj
            avoided += avoided_nusd
            local += local_nusd
            net += net_nusd
        yield [
            str(pk),
            started.isoformat(),
            source,
            status,
            csv_text(flow),
            csv_text(key),
            csv_text(user),
            csv_text(model),
            csv_text(node),
            "" if p_tok is None else str(p_tok),
            "" if c_tok is None else str(c_tok),
            "" if total_ms is None else f"{total_ms:.1f}",
            f"{energy_mj / 1000:.3f}" if costed else "",
            _money_cell(avoided_nusd, priced),
            usd_text(local_nusd) if costed else "",
            _money_cell(net_nusd, priced),
            "" if not costed else "priced" if priced else "unpriced",
            error_code,
            run_url.format(id=pk),
        ]
    yield [
        "TOTAL",
        "",
        "",
        f"{ok} ok of {runs_n}",
        *[""] * 5,
        str(prompt),
        str(completion),
        "",
        f"{energy / 1000:.3f}",
        usd_text(avoided),
        usd_text(local),
        usd_text(net),
        "",
        "",
        "",
    ]


def _money_cell(nano: int | None, priced: bool | None) -> str:
    if priced is None or nano is None:
        return ""
    return usd_text(nano) if priced else "unpriced"


def csv_chunks(runs: QuerySet[Run], *, run_url: str) -> Iterator[str]:
    """``csv_rows`` as CSV text, a few hundred lines at a time: what the response streams."""
    parts: list[str] = []
    writer = csv.writer(_Parts(parts), lineterminator="\n")
    rows = csv_rows(runs, run_url=run_url)
    while True:
        for _, row in zip(range(CSV_ROWS_PER_CHUNK), rows, strict=False):
            writer.writerow(row)
        if not parts:
            return
        yield "".join(parts)
        parts.clear()


class _Parts:
    """Where ``csv.writer`` writes: the pieces of the next chunk."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def write(self, text: str) -> None:
        self.parts.append(text)
