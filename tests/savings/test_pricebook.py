"""The price book: seeded offline from genai-prices, effective-dated, never edited in place."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from opsdash.core.models import AuditEntry
from opsdash.savings.catalogue import SINCE_ALWAYS
from opsdash.savings.models import Price, PriceSource
from opsdash.savings.money import parse_unit_price
from opsdash.savings.pricebook import (
    PriceInput,
    PriceRefused,
    add_price,
    close_price,
    price_in_effect,
    refresh_prices,
)
from tests.savings.factories import price

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded_prices")]


def test_the_book_is_seeded_with_common_paid_models_from_the_genai_prices_package() -> None:
    seeded = Price.objects.filter(source=PriceSource.PACKAGE)
    names = set(seeded.values_list("provider", "model"))
    for expected in [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "o3-mini"),
        ("anthropic", "claude-3-5-sonnet"),
        ("google", "gemini-2.0-flash"),
        ("mistral", "mistral-large"),
    ]:
        assert expected in names
    mini = seeded.get(model="gpt-4o-mini")
    assert (mini.input_nusd_per_mtok, mini.output_nusd_per_mtok) == (150_000_000, 600_000_000)
    assert mini.effective_from == SINCE_ALWAYS and mini.effective_to is None


def test_dated_package_prices_become_consecutive_rows() -> None:
    o3 = list(
        Price.objects.filter(model="o3", source=PriceSource.PACKAGE).order_by("effective_from")
    )
    assert len(o3) == 2
    assert o3[0].effective_to == o3[1].effective_from
    assert o3[0].output_nusd_per_mtok > o3[1].output_nusd_per_mtok  # o3 got cheaper


def test_a_model_name_the_package_knows_by_another_spelling_finds_its_price() -> None:
    found = price_in_effect("openai", "gpt-4o-mini-2024-07-18", timezone.now())
    assert found is not None and found.model == "gpt-4o-mini"
    assert price_in_effect("OpenAI", " GPT-4o-mini ", timezone.now()) == found
    assert price_in_effect("openai", "no-such-model", timezone.now()) is None


def test_an_admin_row_overrides_the_package_row_while_it_is_in_effect(admin) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    ours = price("openai", "gpt-4o-mini", "0.10", "0.40", start=now, user=admin)
    assert price_in_effect("openai", "gpt-4o-mini", now + timedelta(seconds=1)) == ours
    package = price_in_effect("openai", "gpt-4o-mini", now - timedelta(days=1))
    assert package is not None and package.source == PriceSource.PACKAGE


def test_a_change_closes_the_open_row_and_opens_a_new_one_leaving_its_prices_alone(admin) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    first = price("acme", "chat-1", "1.00", "2.00", start=now - timedelta(days=30), user=admin)
    second = price("acme", "chat-1", "3.00", "4.00", user=admin)
    first.refresh_from_db()
    assert first.effective_to == second.effective_from
    assert (first.input_nusd_per_mtok, first.output_nusd_per_mtok) == (1_000_000_000, 2_000_000_000)
    assert first.closed_by == admin
    assert AuditEntry.objects.filter(action="price.add", actor=admin).count() == 2


def test_overlapping_rows_of_one_model_are_refused(admin) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    price("acme", "chat-1", "1", "2", start=now - timedelta(days=60), end=now - timedelta(days=30))
    with pytest.raises(PriceRefused, match="overlaps admin row"):
        price(
            "acme", "chat-1", "1", "2", start=now - timedelta(days=40), end=now - timedelta(days=35)
        )
    with pytest.raises(PriceRefused, match="overlaps"):
        price("acme", "chat-1", "1", "2", start=now - timedelta(days=45))
    # Back to back is not an overlap.
    price("acme", "chat-1", "5", "6", start=now - timedelta(days=30), end=now - timedelta(days=20))
    # A future open row blocks an open row starting before it.
    price("acme", "chat-2", "1", "2", start=now + timedelta(days=10))
    with pytest.raises(PriceRefused, match="overlaps"):
        price("acme", "chat-2", "1", "2", start=now)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_price": "-0.5"}, "cannot be negative"),
        ({"output_price": "999999"}, "not believable"),
        ({"currency": "EUR"}, "kept in USD"),
        ({"currency": "XXX"}, "kept in USD"),
        ({"input_price": "two dollars"}, "must be a number"),
        ({"provider": ""}, "Give the provider"),
        ({"model": "has spaces in it"}, "Give the model"),
    ],
)
def test_bad_prices_are_refused_with_a_clear_message(changes, message) -> None:  # type: ignore[no-untyped-def]
    typed = {"provider": "acme", "model": "chat-1", "input_price": "1", "output_price": "2"}
    with pytest.raises(PriceRefused, match=message):
        add_price(price=PriceInput(**(typed | changes)), user=None)
    assert not Price.objects.filter(provider="acme").exists()


def test_a_reversed_date_range_is_refused() -> None:
    now = timezone.now()
    with pytest.raises(PriceRefused, match="reversed"):
        price("acme", "chat-1", "1", "2", start=now, end=now - timedelta(days=1))


def test_a_price_cannot_be_closed_in_the_past_or_twice(admin) -> None:  # type: ignore[no-untyped-def]
    row = price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=5))
    with pytest.raises(PriceRefused, match="in the past"):
        close_price(price=row, user=admin, at=timezone.now() - timedelta(days=1))
    closed = close_price(price=row, user=admin)
    assert closed.effective_to is not None and closed.closed_by == admin
    with pytest.raises(PriceRefused, match="already closed"):
        close_price(price=row, user=admin)
    assert price_in_effect("acme", "chat-1", timezone.now() + timedelta(seconds=1)) is None


def test_refresh_adds_rows_only_for_prices_that_changed() -> None:
    first = refresh_prices()
    assert first.added == [] and first.unchanged > 30

    # The book's gpt-4o-mini package row says something the package no longer does.
    Price.objects.filter(model="gpt-4o-mini", source=PriceSource.PACKAGE).delete()
    stale = Price.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_nusd_per_mtok=parse_unit_price("0.30", what="input"),
        output_nusd_per_mtok=parse_unit_price("1.20", what="output"),
        effective_from=SINCE_ALWAYS,
        source=PriceSource.PACKAGE,
    )
    second = refresh_prices()
    assert [(p.provider, p.model) for p in second.added] == [("openai", "gpt-4o-mini")]
    new = second.added[0]
    assert (new.input_nusd_per_mtok, new.output_nusd_per_mtok) == (150_000_000, 600_000_000)
    stale.refresh_from_db()
    assert stale.effective_to == new.effective_from  # history kept, not rewritten
    assert stale.input_nusd_per_mtok == 300_000_000
    assert refresh_prices().added == []
    assert AuditEntry.objects.filter(action="price.refresh").count() == 3


def test_refresh_does_not_reopen_a_package_price_an_admin_closed(admin) -> None:  # type: ignore[no-untyped-def]
    row = Price.objects.get(model="gpt-4o-mini", source=PriceSource.PACKAGE)
    close_price(price=row, user=admin)
    result = refresh_prices(now=timezone.now() + timedelta(minutes=1))
    assert result.added == []
    assert any("gpt-4o-mini" in problem for problem in result.problems)
