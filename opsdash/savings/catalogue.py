"""The paid-model price catalogue, read offline from the installed ``genai-prices`` package.

``genai-prices`` ships a snapshot of every provider's prices (with the dates on which they
changed) inside the wheel, so seeding needs no network. Only a curated list of common paid chat
models is copied into the price book: they are what a local model plausibly replaces.

The package's long-context tiers ("above 200k input tokens every token costs double") are not
copied: the book keeps the base rate, which is what every request below the tier pays. Models
priced by time of day are skipped, since a row's price cannot depend on the hour.

Batch prices: where the package has a price variant for ``{"processing": "batch"}`` (Anthropic,
Google, OpenAI models), a row carries it; an ``openai`` model without one gets half its
interactive price, OpenAI's published Batch API discount, and its note says so.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from opsdash.savings.money import div_round, usd_to_nano

logger = logging.getLogger(__name__)

SOURCE = "genai-prices"
# A base price with no start date in the package applies "since always": from before any run.
SINCE_ALWAYS = datetime(2020, 1, 1, tzinfo=UTC)
# The package's request context for a batch API request (``ModelInfo.price_variants``).
BATCH_CONTEXT = {"processing": "batch"}
# Providers whose batch API is a flat discount on every model: the batch price where the
# package has none (OpenAI's Batch API: 50% off input and output).
BATCH_DISCOUNT_PERCENT = {"openai": 50}

CURATED: dict[str, tuple[str, ...]] = {
    "openai": (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "o1",
        "o1-mini",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
    ),
    "anthropic": (
        "claude-3-haiku",
        "claude-3-5-haiku",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet",
        "claude-sonnet-4-0",
        "claude-opus-4-0",
        "claude-opus-4-1",
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
    ),
    "google": (
        "gemini-1.5-flash",
        "gemini-1.5-pro",
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
    ),
    "mistral": (
        "mistral-large",
        "mistral-medium",
        "mistral-small-latest",
        "codestral-latest",
        "ministral-8b",
        "mistral-nemo",
        "pixtral-large-latest",
    ),
    "x-ai": ("grok-3", "grok-3-mini", "grok-4-0709"),
    "cohere": ("command-r", "command-r-plus", "command-a"),
    "deepseek": ("deepseek-v3.2",),
}


@dataclass(frozen=True)
class PackagePrice:
    """One effective-dated price of the package, in the book's units."""

    provider: str
    model: str
    effective_from: datetime
    effective_to: datetime | None
    input_nusd_per_mtok: int
    output_nusd_per_mtok: int
    cached_input_nusd_per_mtok: int | None
    note: str
    batch_input_nusd_per_mtok: int | None = None
    batch_output_nusd_per_mtok: int | None = None

    def same_price(self, other: Any) -> bool:
        return (
            self.input_nusd_per_mtok,
            self.output_nusd_per_mtok,
            self.cached_input_nusd_per_mtok,
            self.batch_input_nusd_per_mtok,
            self.batch_output_nusd_per_mtok,
        ) == (
            other.input_nusd_per_mtok,
            other.output_nusd_per_mtok,
            other.cached_input_nusd_per_mtok,
            other.batch_input_nusd_per_mtok,
            other.batch_output_nusd_per_mtok,
        )


def _snapshot() -> Any:
    from genai_prices import data_snapshot  # a 1.5 MB data module: load it only when needed

    return data_snapshot.get_snapshot()


def package_version() -> str:
    from genai_prices import __version__

    return str(__version__)


@functools.lru_cache(maxsize=1024)
def canonical_model(provider: str, model: str) -> str:
    """The package's id for a model name it knows (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``),
    else the name unchanged."""
    if not provider or not model:
        return model
    try:
        found_provider, found = _snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return model
    if found_provider.id != provider:
        return model
    return str(found.id)


def _unit(value: Any) -> tuple[int | None, str]:
    """A package price field in nano-USD per Mtok, and a note when a tier was dropped."""
    if value is None:
        return None, ""
    if isinstance(value, Decimal):
        return usd_to_nano(value), ""
    base = getattr(value, "base", None)  # TieredPrices
    tiers = getattr(value, "tiers", None) or []
    if isinstance(base, Decimal):
        first = min((t.start for t in tiers), default=None)
        note = f"base rate; the package charges more above {first:,} input tokens" if first else ""
        return usd_to_nano(base), note
    return None, ""


def _segments(model_info: Any) -> list[tuple[datetime, Any]] | None:
    """(start, ModelPrice) in date order, or None when the prices depend on the time of day."""
    prices = model_info.prices
    if not isinstance(prices, list):
        return [(SINCE_ALWAYS, prices)]
    segments = []
    for conditional in prices:
        constraint = conditional.constraint
        if constraint is None:
            segments.append((SINCE_ALWAYS, conditional.prices))
        elif isinstance(getattr(constraint, "start_date", None), date):
            day = constraint.start_date
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            segments.append((start, conditional.prices))
        else:
            return None
    segments.sort(key=lambda s: s[0])
    return segments


def _batch_variant(model_info: Any, start: datetime, end: datetime | None) -> Any:
    """The package's batch prices for a segment [start, end), or None.

    The first variant whose ``when`` a batch request satisfies wins (the package resolves
    variants first to last). A variant dated inside the segment counts for all of it: the
    package dates batch prices from when it verified them ("earlier batch history is not
    modelled"), and batch runs only exist since OpsDash's Batch API, so backdating a variant
    to its segment's start changes no run's cost, while splitting the segment would move
    interactive runs already priced to another row.
    """
    for variant in getattr(model_info, "price_variants", None) or ():
        when = getattr(variant, "when", None) or {}
        if not when or any(BATCH_CONTEXT.get(key) != value for key, value in when.items()):
            continue
        constraint = variant.constraint
        if constraint is not None:
            day = getattr(constraint, "start_date", None)
            if not isinstance(day, date):
                continue  # by time of day: a row cannot depend on the hour
            if end is not None and datetime(day.year, day.month, day.day, tzinfo=UTC) >= end:
                continue
        return variant.prices
    return None


def _batch_prices(
    provider: str, model_info: Any, start: datetime, end: datetime | None, base: tuple[int, int]
) -> tuple[int | None, int | None, str]:
    """(batch input, batch output, note) for one segment, in nano-USD per Mtok."""
    variant = _batch_variant(model_info, start, end)
    if variant is not None:
        # A key the variant leaves out costs what it does interactively (the package's rule).
        batch_in, _ = _unit(getattr(variant, "input_mtok", None))
        batch_out, _ = _unit(getattr(variant, "output_mtok", None))
        batch_in = base[0] if batch_in is None else batch_in
        batch_out = base[1] if batch_out is None else batch_out
        return batch_in, batch_out, "batch price from genai-prices"
    percent = BATCH_DISCOUNT_PERCENT.get(provider)
    if percent is None:
        return None, None, ""
    keep = 100 - percent
    return (
        div_round(base[0] * keep, 100),
        div_round(base[1] * keep, 100),
        f"batch price {keep}% of the interactive one (OpenAI's Batch API is {percent}% off)",
    )


def package_schedule(provider: str, model_ref: str) -> list[PackagePrice]:
    """Every dated price the package has for one model; empty when it has no usable price."""
    try:
        found_provider, info = _snapshot().find_provider_model(model_ref, None, provider, None)
    except LookupError:
        logger.warning("genai-prices does not know %s/%s", provider, model_ref)
        return []
    segments = _segments(info)
    if not segments:
        return []
    schedule = []
    for i, (start, price) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else None
        if end is not None and end <= start:
            continue  # two prices from the same day: the later one wins
        input_price, note_in = _unit(getattr(price, "input_mtok", None))
        output_price, note_out = _unit(getattr(price, "output_mtok", None))
        cached, _ = _unit(getattr(price, "cache_read_mtok", None))
        if input_price is None or output_price is None:
            return []
        name = info.name or info.id
        batch_in, batch_out, note_batch = _batch_prices(
            found_provider.id, info, start, end, (input_price, output_price)
        )
        parts = (f"{name}, genai-prices {package_version()}", note_in or note_out, note_batch)
        note = "; ".join(part for part in parts if part)
        schedule.append(
            PackagePrice(
                provider=found_provider.id,
                model=str(info.id),
                effective_from=start,
                effective_to=end,
                input_nusd_per_mtok=input_price,
                output_nusd_per_mtok=output_price,
                cached_input_nusd_per_mtok=cached,
                note=note[:300],
                batch_input_nusd_per_mtok=batch_in,
                batch_output_nusd_per_mtok=batch_out,
            )
        )
    return schedule


def package_catalogue() -> list[PackagePrice]:
    """The dated prices of every curated model, as the installed package has them."""
    rows: list[PackagePrice] = []
    seen: set[tuple[str, str]] = set()
    for provider, models in CURATED.items():
        for ref in models:
            schedule = package_schedule(provider, ref)
            if schedule and (schedule[0].provider, schedule[0].model) not in seen:
                seen.add((schedule[0].provider, schedule[0].model))
                rows.extend(schedule)
    return rows


def seed_prices(price_model: Any, *, now: datetime | None = None) -> int:
    """Insert the package's schedule for every curated model that has no package rows yet.

    Takes the model class so the data migration can pass its historical ``Price`` (one from
    before the batch columns gets none: ``fill_batch_prices`` adds them later). Returns the
    number of rows added.
    """
    field_names = {f.name for f in price_model._meta.get_fields()}
    has_batch = "batch_input_nusd_per_mtok" in field_names
    now = now or datetime.now(UTC)
    have = set(
        price_model.objects.filter(source=SOURCE).values_list("provider", "model").distinct()
    )
    new = [
        price_model(
            provider=row.provider,
            model=row.model,
            currency="USD",
            input_nusd_per_mtok=row.input_nusd_per_mtok,
            output_nusd_per_mtok=row.output_nusd_per_mtok,
            cached_input_nusd_per_mtok=row.cached_input_nusd_per_mtok,
            effective_from=row.effective_from,
            effective_to=row.effective_to,
            source=SOURCE,
            note=row.note if has_batch else _without_batch_note(row.note),
            **(
                {
                    "batch_input_nusd_per_mtok": row.batch_input_nusd_per_mtok,
                    "batch_output_nusd_per_mtok": row.batch_output_nusd_per_mtok,
                }
                if has_batch
                else {}
            ),
        )
        for row in package_catalogue()
        if (row.provider, row.model) not in have
    ]
    price_model.objects.bulk_create(new)
    return len(new)


def _without_batch_note(note: str) -> str:
    return "; ".join(part for part in note.split("; ") if not part.startswith("batch price"))


def fill_batch_prices(price_model: Any) -> int:
    """Give the package's rows that have none the batch prices of the same dated price.

    The one write to a price row after it is made, and only to columns that were empty: no run
    had been priced at a batch rate before the columns existed (``Run.source == "batch"`` is as
    new), so no frozen cost depends on them. A row whose interactive prices the package no
    longer has for that start is left without (a refresh adds a new row). Returns rows filled.
    """
    catalogue = {
        (row.provider, row.model, row.effective_from): row
        for row in package_catalogue()
        if row.batch_input_nusd_per_mtok is not None
    }
    filled = 0
    rows = price_model.objects.filter(source=SOURCE, batch_input_nusd_per_mtok__isnull=True)
    for price in rows:
        row = catalogue.get((price.provider, price.model, price.effective_from))
        if row is None or (row.input_nusd_per_mtok, row.output_nusd_per_mtok) != (
            price.input_nusd_per_mtok,
            price.output_nusd_per_mtok,
        ):
            continue
        price.batch_input_nusd_per_mtok = row.batch_input_nusd_per_mtok
        price.batch_output_nusd_per_mtok = row.batch_output_nusd_per_mtok
        price.note = row.note
        price.save(
            update_fields=["batch_input_nusd_per_mtok", "batch_output_nusd_per_mtok", "note"]
        )
        filled += 1
    return filled
