"""Display helpers for nano-USD, energy and the server-side sparklines of the savings pages."""

from __future__ import annotations

from collections.abc import Sequence

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from opsdash.savings.money import format_unit_price, format_usd, nano_to_str

register = template.Library()

MAX_POINTS = 92


@register.filter
def usd(nano: int | None) -> str:
    """``$1,234.57``; enough digits that a small saving does not read as $0.00."""
    return format_usd(nano)


@register.filter
def usd_exact(nano: int | None) -> str:
    """The exact decimal (for a tooltip): ``12.345678901``."""
    return "" if nano is None else nano_to_str(nano)


@register.filter
def unit_price(nano_per_mtok: int | None) -> str:
    return format_unit_price(nano_per_mtok)


@register.filter
def energy(millijoules: int | None) -> str:
    """Joules below a watt-hour, then Wh and kWh, the units an electricity bill uses."""
    if millijoules is None:
        return "—"
    joules = millijoules / 1000
    if joules < 1:
        return f"{joules:.3f} J" if joules else "0 J"
    if joules < 3600:
        return f"{joules:,.1f} J"
    wh = joules / 3600
    if wh < 1000:
        return f"{wh:,.2f} Wh"
    return f"{wh / 1000:,.2f} kWh"


@register.filter
def compact(count: int | None) -> str:
    """12 345 678 → "12.3M"."""
    if count is None:
        return "—"
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(count) >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)


@register.filter
def change(percent: float | None) -> str:
    if percent is None:
        return "—"
    arrow = "▲" if percent > 0 else "▼" if percent < 0 else ""
    return f"{arrow} {abs(percent):.0f}%".strip()


def _downsample(series: Sequence[int], points: int) -> list[int]:
    if len(series) <= points:
        return list(series)
    size = -(-len(series) // points)
    return [sum(series[i : i + size]) for i in range(0, len(series), size)]


@register.simple_tag
def sparkline(series: Sequence[int], width: int = 120, height: int = 28) -> SafeString:
    """A small inline SVG of a daily series (summed into at most ~90 buckets), zero line dashed.

    Rendered on the server: it needs no script, prints, and costs nothing per row to draw.
    """
    values = _downsample(series, MAX_POINTS)
    if not values or not any(values):
        return format_html(
            '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
            'aria-label="no activity"><line x1="0" y1="{}" x2="{}" y2="{}" class="spark-zero"/>'
            "</svg>",
            width,
            height,
            width,
            height,
            height - 2,
            width,
            height - 2,
        )
    low, high = min(0, *values), max(0, *values)
    scale = (height - 4) / ((high - low) or 1)
    step = width / max(1, len(values) - 1)
    # Formatted in one pass (a page draws one per workflow, 50 at a time).
    ys = [f"{2 + (high - v) * scale:.1f}" for v in values]
    if len(values) == 1:
        points = f"0,{ys[0]} {width},{ys[0]}"
    else:
        points = " ".join([f"{i * step:.1f},{y}" for i, y in enumerate(ys)])
    zero = f"{2 + high * scale:.1f}"
    trend = "down" if sum(values) < 0 else "up"  # a loss over the range draws red
    return mark_safe(  # every interpolated value is a number computed here
        f'<svg class="spark spark-{trend}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="daily net saving">'
        f'<line x1="0" y1="{zero}" x2="{width}" y2="{zero}" class="spark-zero"/>'
        f'<polyline points="{points}" class="spark-line"/></svg>'
    )


@register.filter
def attr_change(month: object, name: str) -> float | None:
    """``month|attr_change:"net_nusd"``: this month against the same days of last month."""
    return month.change_percent(name)  # type: ignore[attr-defined]
