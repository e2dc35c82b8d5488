from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def params(count: int | None) -> str:
    """134515008 → "134.5M", the way model cards write parameter counts."""
    if not count:
        return "—"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)


@register.filter
def status_class(status: str) -> str:
    return f"status status-{status}"
