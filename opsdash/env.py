"""Typed readers for ``OPSDASH_*`` environment variables.

Each helper returns the default when the variable is unset or empty and refuses a malformed
value with ``ImproperlyConfigured`` naming the variable, so a typo never silently becomes a
default.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def envstr(name: str, default: str) -> str:
    """A string; the default when unset."""
    return _raw(name) or default


def envbool(name: str, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    """A whole number, at least ``minimum`` when given."""
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def envbytes(name: str, default: int) -> int:
    """A size in bytes: ``1073741824``, ``512M``, ``20G`` or ``1.5T`` (binary units)."""
    value = _raw(name)
    if value is None:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", value, flags=re.IGNORECASE)
    if not match:
        raise ImproperlyConfigured(
            f"{name} must be a size such as 1073741824, 512M or 20G, not {value!r}."
        )
    number, unit = match.groups()
    return int(Decimal(number) * _SIZE_UNITS[unit.upper()])


def envdecimal(name: str, default: str) -> Decimal:
    """A non-negative decimal number, kept exact (prices)."""
    value = _raw(name) or default
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None
    if not number.is_finite() or number < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative number, not {value!r}.")
    return number


def envlist(name: str, default: list[str], *, sep: str = ",") -> list[str]:
    """A ``sep``-separated list; blank items are dropped."""
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(sep) if item.strip()]


def envpath(name: str, default: Path) -> Path:
    """An absolute path (a relative value is taken from the current directory)."""
    value = _raw(name)
    return Path(value).expanduser().resolve() if value else default


def envsecret(name: str) -> str | None:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/K8s secrets)."""
    value = _raw(name)
    file_name = _raw(f"{name}_FILE")
    if value and file_name:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return value
