"""The decorators that put a capability check on every page (API operations use
``opsdash.accounts.api_auth``).

Each decorated view records the capability it requires (``view.opsdash_cap``) so the URL walk
in ``tests/test_permissions.py`` can prove no URL is left without a check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse

from opsdash.accounts.roles import Cap, can
from opsdash.accounts.services import user_for_token
from opsdash.core.bearer import bearer_token

V = TypeVar("V", bound=Callable[..., Any])

PUBLIC = "public"


def requires(cap: Cap, *, api: bool = False) -> Callable[[V], V]:
    """Page views: anonymous → login page; lacking the capability → 403.

    With ``api``, a bearer token is accepted too and anonymous callers get 401, not a page.
    """

    def decorator(view: V) -> V:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            token = bearer_token(request) if api else None
            if token is not None:
                user = user_for_token(token)
                if user is not None:
                    request.user = user
            if not request.user.is_authenticated:
                if api:
                    return JsonResponse({"detail": "Unauthorized"}, status=401)
                return redirect_to_login(request.get_full_path())
            if not can(request.user, cap):
                raise PermissionDenied(f"Your role does not allow this ({cap}).")
            return view(request, *args, **kwargs)

        wrapper.opsdash_cap = cap  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def public(view: V) -> V:
    """Marks a view that deliberately needs no login (login page, health check)."""
    view.opsdash_cap = PUBLIC  # type: ignore[attr-defined]
    return view
