"""Money as integer nano-USD (1 USD = 10⁹), and the few conversions in and out of it.

Every stored amount is an ``int`` of nano-USD: sums are exact and associative, so a total built
from rollups equals the total built from runs to the last nano-dollar. ``Decimal`` appears only
for unit prices in transit (a form field, the genai-prices catalogue) and for display. Unit
prices are kept as nano-USD *per million tokens* (``$0.0375/Mtok`` is 37 500 000), so the
cheapest published prices stay whole numbers.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from opsdash.core.errors import Refusal

NANO_PER_USD = 10**9
TOKENS_PER_MTOK = 10**6
MILLIJOULES_PER_KWH = 3_600_000_000  # 1 kWh = 3.6 MJ

CURRENCY = "USD"
# A unit price above this is a typing mistake, not a tariff (the dearest published model is a
# few hundred dollars per million output tokens).
MAX_USD_PER_MTOK = Decimal(5000)
MAX_USD_PER_KWH = Decimal(10)


class MoneyError(Refusal, ValueError):
    """A price a person typed cannot be used; the message says why, in their terms."""


def div_round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, in integers only."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


def token_cost(tokens: int, nusd_per_mtok: int) -> int:
    """What ``tokens`` cost at a unit price of nano-USD per million tokens, in nano-USD."""
    return div_round(tokens * nusd_per_mtok, TOKENS_PER_MTOK)


def energy_cost(energy_mj: int, nusd_per_kwh: int) -> int:
    """What ``energy_mj`` millijoules cost at nano-USD per kWh, in nano-USD."""
    return div_round(energy_mj * nusd_per_kwh, MILLIJOULES_PER_KWH)


def usd_to_nano(value: Decimal) -> int:
    """An exact USD amount as nano-USD; refuses amounts finer than a nano-dollar."""
    scaled = value * NANO_PER_USD
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{value} has more than 9 decimal places; a nano-dollar is the finest.")
    return int(scaled)


def nano_to_decimal(nano: int) -> Decimal:
    return Decimal(nano).scaleb(-9)


def nano_to_str(nano: int) -> str:
    """The exact decimal string the API and the CSV show: ``"-0.000001500"``."""
    sign = "-" if nano < 0 else ""
    whole, fraction = divmod(abs(nano), NANO_PER_USD)
    return f"{sign}{whole}.{fraction:09d}"


def parse_usd(text: object, *, what: str, maximum: Decimal, currency: str = CURRENCY) -> Decimal:
    """A non-negative USD amount typed by a person (``"2.50"``, ``"$2.50"``), else MoneyError."""
    if str(currency or CURRENCY).strip().upper() != CURRENCY:
        raise MoneyError(
            f"Prices are kept in USD; {str(currency).strip()!r} is not supported. "
            "Convert the price to US dollars first."
        )
    raw = str(text if text is not None else "").strip().replace(",", "").removeprefix("$")
    if not raw:
        raise MoneyError(f"Give the {what}.")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"The {what} must be a number such as 2.50, not {raw!r}.") from None
    if not value.is_finite():
        raise MoneyError(f"The {what} must be a number such as 2.50, not {raw!r}.")
    if value < 0:
        raise MoneyError(f"The {what} cannot be negative ({raw}).")
    if value > maximum:
        raise MoneyError(
            f"The {what} of ${value} is not believable (the limit is ${maximum}); check the units."
        )
    return value


def parse_unit_price(text: object, *, what: str, currency: str = CURRENCY) -> int:
    """A typed USD-per-million-tokens price as nano-USD per million tokens."""
    return usd_to_nano(parse_usd(text, what=what, maximum=MAX_USD_PER_MTOK, currency=currency))


def parse_kwh_price(text: object, *, currency: str = CURRENCY) -> int:
    """A typed USD-per-kWh electricity price as nano-USD per kWh."""
    value = parse_usd(text, what="electricity price", maximum=MAX_USD_PER_KWH, currency=currency)
    return usd_to_nano(value)


def format_usd(nano: int | None, *, precise: bool = False) -> str:
    """For people: ``$1,234.57``; small amounts keep enough digits to not read as zero."""
    if nano is None:
        return "—"
    value = nano_to_decimal(nano)
    sign = "−" if nano < 0 else ""
    value = abs(value)
    if precise:
        return f"{sign}${value:,.9f}"
    if value == 0:
        return "$0.00"
    if value < Decimal("0.01"):
        digits = min(9, 2 - value.adjusted())  # three significant digits
        return f"{sign}${value:.{digits}f}".rstrip("0")
    if value < 1:
        return f"{sign}${value:.4f}"
    return f"{sign}${value:,.2f}"


def format_unit_price(nusd_per_mtok: int | None) -> str:
    """``$2.50`` for a per-million-token price, with as many decimals as it has."""
    if nusd_per_mtok is None:
        return "—"
    value = nano_to_decimal(nusd_per_mtok).normalize()
    text = f"{value:f}"
    if "." not in text:
        text += ".00"
    elif len(text.split(".")[1]) == 1:
        text += "0"
    return f"${text}"
