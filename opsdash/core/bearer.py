"""The one reading of ``Authorization: Bearer <token>``, for requests and raw ASGI scopes.

Personal API tokens, workflow keys, the ``/metrics`` token and the upload body guard all send
their secret this way. The scheme is case-insensitive (RFC 7235); spaces around the token are
ignored; a header with another scheme, or ``Bearer`` with nothing after it, carries no token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.http import HttpRequest


def parse_authorization(value: str) -> str | None:
    """The token in an ``Authorization`` header value, or ``None``."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def bearer_token(request: HttpRequest) -> str | None:
    """The bearer token ``request`` carries, or ``None``."""
    return parse_authorization(request.headers.get("Authorization", ""))


def scope_bearer_token(scope: Mapping[str, Any]) -> str | None:
    """The bearer token of an ASGI ``scope`` (HTTP or websocket), or ``None``."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name.lower() == b"authorization":
            return parse_authorization(value.decode("latin1"))
    return None
