"""API authentication and the role check, run before django-ninja parses the request body.

Each operation declares ``auth=api_auth(Cap.…)``: a personal bearer token or the browser's
session (with CSRF, checked only when a session is signed in) identifies the user (none →
401), then the capability is checked (missing → 403). Doing both here, not in the operation,
means a caller without the right gets 403 before any body validation can tell them anything.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from opsdash.accounts.permissions import refusal_sentence
from opsdash.accounts.roles import Cap, can
from opsdash.accounts.services import user_for_token
from opsdash.core.bearer import bearer_token


def _checked(request: HttpRequest, user: Any, cap: Cap) -> Any:
    if user is None:
        return None
    if not can(user, cap):
        raise HttpError(403, refusal_sentence(user=user, cap=cap, what="This endpoint"))
    request.user = user
    return user


class TokenAuth(HttpBearer):
    def __init__(self, cap: Cap) -> None:
        super().__init__()
        self.cap = cap

    def __call__(self, request: HttpRequest) -> Any:
        # HttpBearer stays for the OpenAPI scheme; the header is read as everywhere else.
        token = bearer_token(request)
        return None if token is None else self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return _checked(request, user_for_token(token), self.cap)


class RoleSessionAuth(SessionAuth):
    def __init__(self, cap: Cap) -> None:
        super().__init__()
        self.cap = cap

    def __call__(self, request: HttpRequest) -> Any:
        # CSRF protects a signed-in browser session; without one there is nothing to protect
        # and the caller simply has no credentials: 401 (README), not "CSRF check failed".
        if not request.user.is_authenticated:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return _checked(request, super().authenticate(request, key), self.cap)


def api_auth(cap: Cap) -> list[Any]:
    """The ``auth=`` of an operation that needs ``cap``."""
    return [TokenAuth(cap), RoleSessionAuth(cap)]
