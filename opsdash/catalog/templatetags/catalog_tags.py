from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

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
def num(value: int | None) -> str:
    """A whole number with thousands separators, or a dash when unknown."""
    return "—" if value is None else f"{value:,}"


@register.filter
def status_class(status: str) -> str:
    return f"status status-{status}"


@register.filter
def link_models(text: str) -> SafeString:
    """Escape ``text`` and turn the ``/models/<id>/`` paths services mention into links."""
    escaped = str(escape(text))
    return mark_safe(re.sub(r"(/models/\d+/)", r'<a href="\1">\1</a>', escaped))  # noqa: S308
