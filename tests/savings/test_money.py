"""Money is integer nano-USD: exact arithmetic, exact strings, no floats anywhere."""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from opsdash.savings.money import (
    MoneyError,
    div_round,
    energy_cost,
    format_usd,
    nano_to_str,
    parse_kwh_price,
    parse_unit_price,
    token_cost,
)


def test_token_costs_are_whole_nano_dollars_computed_without_floats() -> None:
    # gpt-4o-mini: $0.15 in, $0.60 out per million tokens.
    cost = token_cost(1234, parse_unit_price("0.15", what="input price")) + token_cost(
        567, parse_unit_price("0.60", what="output price")
    )
    assert cost == 185_100 + 340_200  # 1234 × 150 nano + 567 × 600 nano
    assert type(cost) is int


def test_rounding_is_half_away_from_zero_and_happens_once() -> None:
    assert div_round(5, 10) == 1
    assert div_round(4, 10) == 0
    assert div_round(-5, 10) == -1
    # 1 token at $0.0375/Mtok is 37.5 nano-USD: rounds to 38, never to a float.
    assert token_cost(1, parse_unit_price("0.0375", what="input price")) == 38


def test_the_costing_agrees_with_genai_prices_calc_price_to_the_nano_dollar() -> None:
    expected = calc_price(
        Usage(input_tokens=123_457, output_tokens=9_876), "gpt-4o", provider_id="openai"
    ).total_price
    ours = token_cost(123_457, parse_unit_price("2.5", what="input")) + token_cost(
        9_876, parse_unit_price("10", what="output")
    )
    assert Decimal(nano_to_str(ours)) == expected


def test_a_kilowatt_hour_costs_the_electricity_price_exactly() -> None:
    per_kwh = parse_kwh_price("0.17")
    assert energy_cost(3_600_000_000, per_kwh) == 170_000_000  # 1 kWh in mJ → $0.17
    assert energy_cost(20_000, per_kwh) == 944  # 20 J: 0.000944… USD


def test_amounts_print_as_exact_decimal_strings() -> None:
    assert nano_to_str(1_500) == "0.000001500"
    assert nano_to_str(-12_345_678_901) == "-12.345678901"
    assert nano_to_str(0) == "0.000000000"


def test_small_amounts_do_not_display_as_zero() -> None:
    assert format_usd(944) == "$0.000000944"
    assert format_usd(4_200_000) == "$0.0042"
    assert format_usd(0) == "$0.00"
    assert format_usd(-1_234_567_000_000) == "−$1,234.57"


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("-1", "cannot be negative"),
        ("50000", "not believable"),
        ("abc", "must be a number"),
        ("NaN", "must be a number"),
        ("", "Give the"),
        ("0.0000000001", "more than 9 decimal places"),
    ],
)
def test_a_bad_unit_price_is_refused_with_a_reason(typed: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_unit_price(typed, what="input price")


def test_a_price_in_another_currency_is_refused() -> None:
    with pytest.raises(MoneyError, match="kept in USD.*'EUR'"):
        parse_unit_price("2.00", what="input price", currency="EUR")
