"""The paid-model price catalogue, read offline from the installed ``genai-prices`` package.

``genai-prices`` ships a snapshot of every provider's prices (with the dates on which they
changed) inside the wheel, so seeding needs no network. Only a curated list of common paid chat
models is copied into the price book: they are what a local model plausibly replaces.

The package's long-context tiers ("above 200k input tokens every token costs double") are not
copied: the book keeps the base rate, which is what every request below the tier pays. Models
priced by time of day are skipped, since a row's price cannot depend on the hour.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from opsdash.savings.money import usd_to_nano

logger = logging.getLogger(__name__)

SOURCE = "genai-prices"
# A base price with no start date in the package applies "since always": from before any run.
SINCE_ALWAYS = datetime(2020, 1, 1, tzinfo=UTC)

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

    def same_price(self, other: Any) -> bool:
        return (
            self.input_nusd_per_mtok,
            self.output_nusd_per_mtok,
            self.cached_input_nusd_per_mtok,
        ) == (
            other.input_nusd_per_mtok,
            other.output_nusd_per_mtok,
            other.cached_input_nusd_per_mtok,
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
        parts = (f"{name}, genai-prices {package_version()}", note_in or note_out)
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

    Takes the model class so the data migration can pass its historical ``Price``. Returns the
    number of rows added.
    """
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
            note=row.note,
        )
        for row in package_catalogue()
        if (row.provider, row.model) not in have
    ]
    price_model.objects.bulk_create(new)
    return len(new)
