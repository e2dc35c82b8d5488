"""The price book's verbs: look a price up, add one, close one, refresh from genai-prices.

A row's prices never change after it is written. A change of price closes the open row at the
moment the new one starts (``effective_to`` is set once, never in the past) and opens a new row,
so every run keeps pointing at the row it was priced with. Rows of one source never overlap for
one model; where an ``admin`` row and a ``genai-prices`` row are both in effect, the admin's wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Refusal
from opsdash.savings import catalogue
from opsdash.savings.models import Price, PriceSource, SavingsAction
from opsdash.savings.money import MoneyError, format_unit_price, parse_unit_price

NAME = re.compile(r"^[a-z0-9][a-z0-9._:/@+-]{0,127}$")
# Closing "now" from a form takes a moment to arrive; anything earlier is the past.
CLOCK_SKEW = timedelta(minutes=2)


class PriceRefused(Refusal):
    """The price change cannot be made; ``reason`` says why in the admin's terms."""


def audit(
    *,
    action: SavingsAction,
    detail: str,
    actor: User | None,
    outcome: str = "ok",
    target: Target | None = None,
) -> None:
    """One savings entry in the audit log; without a target, the action's noun is the target."""
    target = target or Target(type=action.split(".", 1)[0])
    record(actor=actor, action=action, target=target, outcome=outcome, detail=detail)


def normalize_provider(provider: str) -> str:
    return (provider or "").strip().lower()


def normalize_model(model: str) -> str:
    return (model or "").strip().lower()


def _in_effect(at: datetime) -> Q:
    return Q(effective_from__lte=at) & (Q(effective_to__isnull=True) | Q(effective_to__gt=at))


def price_in_effect(provider: str, model: str, at: datetime) -> Price | None:
    """The row that priced ``provider/model`` at ``at``: admin before package, the exact name
    before the package's canonical name for it (``gpt-4o-2024-08-06`` → ``gpt-4o``)."""
    provider, model = normalize_provider(provider), normalize_model(model)
    if not provider or not model:
        return None
    names = [model]
    canonical = catalogue.canonical_model(provider, model)
    if canonical != model:
        names.append(canonical)
    rows = list(Price.objects.filter(_in_effect(at), provider=provider, model__in=names))
    rows.sort(key=lambda r: (r.source != PriceSource.ADMIN, names.index(r.model)))
    return rows[0] if rows else None


def open_prices(at: datetime | None = None) -> set[tuple[str, str]]:
    """(provider, model) of every row in effect at ``at``: one query for a whole page."""
    at = at or timezone.now()
    return set(Price.objects.filter(_in_effect(at)).values_list("provider", "model"))


def has_price(provider: str, model: str, *, prices: set[tuple[str, str]]) -> bool:
    provider, model = normalize_provider(provider), normalize_model(model)
    if not provider or not model:
        return False
    return (provider, model) in prices or (
        provider,
        catalogue.canonical_model(provider, model),
    ) in prices


@dataclass(frozen=True)
class PriceInput:
    """What a person typed; every field a string until ``add_price`` validates it."""

    provider: str
    model: str
    input_price: str
    output_price: str
    cached_input_price: str = ""
    currency: str = "USD"
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    note: str = ""
    # Blank: no batch price, so batch runs are priced at the interactive rate.
    batch_input_price: str = ""
    batch_output_price: str = ""


def _overlapping(
    provider: str, model: str, source: str, start: datetime, end: datetime | None
) -> list[Price]:
    rows = Price.objects.select_for_update().filter(provider=provider, model=model, source=source)
    rows = rows.filter(Q(effective_to__isnull=True) | Q(effective_to__gt=start))
    if end is not None:
        rows = rows.filter(effective_from__lt=end)
    return list(rows.order_by("effective_from"))


def _describe(row: Price) -> str:
    until = f"until {row.effective_to:%Y-%m-%d %H:%M}" if row.effective_to else "open-ended"
    batch = (
        f"; batch {format_unit_price(row.batch_input_nusd_per_mtok)} in / "
        f"{format_unit_price(row.batch_output_nusd_per_mtok)} out"
        if row.has_batch_price
        else ""
    )
    return (
        f"{row.source} row #{row.pk} ({format_unit_price(row.input_nusd_per_mtok)} in / "
        f"{format_unit_price(row.output_nusd_per_mtok)} out{batch}, from "
        f"{row.effective_from:%Y-%m-%d %H:%M}, {until})"
    )


def _batch_prices(price: PriceInput) -> tuple[int | None, int | None]:
    """The typed batch prices: both, or neither (blank)."""
    typed_in = str(price.batch_input_price or "").strip()
    typed_out = str(price.batch_output_price or "").strip()
    if not typed_in and not typed_out:
        return None, None
    if not (typed_in and typed_out):
        raise PriceRefused(
            "Give both batch prices (input and output), or leave both blank: without them "
            "batch runs are priced at the interactive rate."
        )
    return (
        parse_unit_price(typed_in, what="batch input price", currency=price.currency),
        parse_unit_price(typed_out, what="batch output price", currency=price.currency),
    )


def add_price(
    *, price: PriceInput, user: User | None, source: PriceSource = PriceSource.ADMIN
) -> Price:
    """Validate and write a price row, closing the open row of the same model and source at
    the new row's start. Overlapping any other row of that source is refused."""
    provider, model = normalize_provider(price.provider), normalize_model(price.model)
    if not NAME.match(provider) or len(provider) > 64:
        raise PriceRefused(
            "Give the provider as genai-prices names it, e.g. openai, anthropic, google."
        )
    if not NAME.match(model):
        raise PriceRefused("Give the model as the provider names it, e.g. gpt-4o-mini.")
    try:
        input_price = parse_unit_price(
            price.input_price, what="input price", currency=price.currency
        )
        output_price = parse_unit_price(
            price.output_price, what="output price", currency=price.currency
        )
        cached = (
            parse_unit_price(
                price.cached_input_price, what="cached-input price", currency=price.currency
            )
            if str(price.cached_input_price or "").strip()
            else None
        )
        batch_input, batch_output = _batch_prices(price)
    except MoneyError as exc:
        raise PriceRefused(str(exc)) from exc
    now = timezone.now()
    start = price.effective_from or now
    end = price.effective_to
    if timezone.is_naive(start) or (end is not None and timezone.is_naive(end)):
        raise PriceRefused("Give the dates with a time zone.")
    if end is not None and end <= start:
        raise PriceRefused(
            f"The date range is reversed: it ends ({end:%Y-%m-%d %H:%M}) before it starts "
            f"({start:%Y-%m-%d %H:%M})."
        )
    with transaction.atomic():
        clashes = _overlapping(provider, model, source, start, end)
        to_close = [
            row
            for row in clashes
            if row.effective_to is None and row.effective_from < start and end is None
        ]
        refused = [row for row in clashes if row not in to_close]
        if refused:
            raise PriceRefused(
                f"This price overlaps {_describe(refused[0])} for {provider}/{model}. "
                "Prices are never edited: pick dates that do not overlap, or close that row."
            )
        for row in to_close:
            if start < now - CLOCK_SKEW and row.source == PriceSource.ADMIN:
                raise PriceRefused(
                    f"A new price from {start:%Y-%m-%d %H:%M} would close {_describe(row)} in "
                    "the past; a change of price can start now or later."
                )
            row.effective_to = start
            row.closed_at, row.closed_by = now, user
            row.save(update_fields=["effective_to", "closed_at", "closed_by"])
        created = Price.objects.create(
            provider=provider,
            model=model,
            currency="USD",
            input_nusd_per_mtok=input_price,
            output_nusd_per_mtok=output_price,
            cached_input_nusd_per_mtok=cached,
            batch_input_nusd_per_mtok=batch_input,
            batch_output_nusd_per_mtok=batch_output,
            effective_from=start,
            effective_to=end,
            source=source,
            note=price.note.strip()[:300],
            created_by=user,
        )
        closed = f"; closed row #{to_close[0].pk}" if to_close else ""
        audit(
            action=SavingsAction.ADD_PRICE,
            actor=user,
            target=Target.of(created, type="price", label=f"{provider}/{model}"),
            detail=f"{provider}/{model}: {_describe(created)}{closed}",
        )
    return created


def close_price(*, price: Price, user: User | None, at: datetime | None = None) -> Price:
    """End an open row at ``at`` (default now); from then on the model has no price of that
    source. The past is never rewritten: ``at`` cannot be earlier than now."""
    now = timezone.now()
    at = at or now
    with transaction.atomic():
        row = Price.objects.select_for_update().get(pk=price.pk)
        if row.effective_to is not None:
            raise PriceRefused(f"{_describe(row)} is already closed.")
        if at < now - CLOCK_SKEW:
            raise PriceRefused("A price cannot be closed in the past: runs were priced with it.")
        if at <= row.effective_from:
            raise PriceRefused(
                f"{_describe(row)} has not started yet; it can only close after it starts."
            )
        row.effective_to = at
        row.closed_at, row.closed_by = now, user
        row.save(update_fields=["effective_to", "closed_at", "closed_by"])
        audit(
            action=SavingsAction.CLOSE_PRICE,
            actor=user,
            target=Target.of(row, type="price", label=f"{row.provider}/{row.model}"),
            detail=f"{row.provider}/{row.model}: closed {_describe(row)}",
        )
    return row


def _typed(nusd_per_mtok: int | None) -> str:
    """A package price as ``add_price`` takes it ("0.075"), blank for none."""
    return format_unit_price(nusd_per_mtok)[1:] if nusd_per_mtok is not None else ""


def _closed_by_a_person(provider: str, model: str) -> bool:
    return Price.objects.filter(
        provider=provider, model=model, source=PriceSource.PACKAGE, closed_by__isnull=False
    ).exists()


@dataclass(frozen=True)
class RefreshResult:
    added: list[Price]
    unchanged: int
    problems: list[str]


def refresh_prices(*, user: User | None = None, now: datetime | None = None) -> RefreshResult:
    """Compare the installed genai-prices with the book; add rows only where a price changed.

    A model the book has never seen gets the package's whole dated schedule (as on first
    migrate). For a known model, each package price in effect now or later is compared with
    the book's package row at that moment; a difference closes that row and opens a new one
    from now (or from the package's future start date). History is never rewritten.
    """
    now = now or timezone.now()
    added: list[Price] = []
    problems: list[str] = []
    unchanged = 0
    with transaction.atomic():
        known = set(
            Price.objects.filter(source=PriceSource.PACKAGE)
            .values_list("provider", "model")
            .distinct()
        )
        for row in catalogue.package_catalogue():
            key = (row.provider, row.model)
            start = row.effective_from if key not in known else max(row.effective_from, now)
            if row.effective_to is not None and row.effective_to <= start:
                continue  # a past price: the book keeps its own history
            book = (
                Price.objects.filter(
                    _in_effect(start),
                    provider=row.provider,
                    model=row.model,
                    source=PriceSource.PACKAGE,
                )
                .order_by("-effective_from")
                .first()
            )
            if book is not None and row.same_price(book):
                unchanged += 1
                continue
            if book is None and key in known and _closed_by_a_person(row.provider, row.model):
                problems.append(
                    f"{row.provider}/{row.model}: an admin closed its genai-prices row; "
                    "not reopened."
                )
                continue
            if book is not None and book.effective_from >= start:
                problems.append(
                    f"{row.provider}/{row.model}: the book has a different package price from "
                    f"{book.effective_from:%Y-%m-%d}; left as it is."
                )
                continue
            try:
                added.append(
                    add_price(
                        price=PriceInput(
                            provider=row.provider,
                            model=row.model,
                            input_price=format_unit_price(row.input_nusd_per_mtok)[1:],
                            output_price=format_unit_price(row.output_nusd_per_mtok)[1:],
                            cached_input_price=(
                                format_unit_price(row.cached_input_nusd_per_mtok)[1:]
                                if row.cached_input_nusd_per_mtok is not None
                                else ""
                            ),
                            effective_from=start,
                            effective_to=row.effective_to if key not in known else None,
                            note=row.note,
                            batch_input_price=_typed(row.batch_input_nusd_per_mtok),
                            batch_output_price=_typed(row.batch_output_nusd_per_mtok),
                        ),
                        user=user,
                        source=PriceSource.PACKAGE,
                    )
                )
            except PriceRefused as exc:
                problems.append(f"{row.provider}/{row.model}: {exc.reason}")
        audit(
            action=SavingsAction.REFRESH_PRICES,
            actor=user,
            detail=(
                f"genai-prices {catalogue.package_version()}: {len(added)} row(s) added, "
                f"{unchanged} unchanged, {len(problems)} problem(s)"
            ),
        )
    return RefreshResult(added=added, unchanged=unchanged, problems=problems)
