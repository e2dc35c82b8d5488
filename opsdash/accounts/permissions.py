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

from opsdash.accounts.roles import MATRIX, Cap, Role, can, roles_of
from opsdash.accounts.services import user_for_token
from opsdash.core.bearer import bearer_token

V = TypeVar("V", bound=Callable[..., Any])

PUBLIC = "public"

# How a role reads in a sentence about who may do something.
_PLURAL = {Role.OPERATOR: "operators", Role.ADMIN: "admins", Role.MANAGER: "managers"}


def refusal_sentence(*, user: Any, cap: Cap, what: str = "This page") -> str:
    """What the 403 page says: who the thing is for and who is asking, in plain words, with no
    capability names ("This page is for admins. You are signed in as mona (manager).")."""
    allowed = [_PLURAL[role] for role in Role if role in MATRIX[cap]]
    for_whom = " and ".join(allowed) if allowed else "superusers"
    held = sorted(str(role) for role in roles_of(user))
    name = user.get_username()
    if held:
        who = f"You are signed in as {name} ({', '.join(held)})."
    else:
        who = f"You are signed in as {name}, who has no role yet."
    return f"{what} is for {for_whom}. {who}"


class RoleRequired(PermissionDenied):
    """A signed-in user lacks a capability. ``str()`` is the sentence for the person (the 403
    page shows it); ``cap`` and ``username`` are for the log line (opsdash.core.logfilters)."""

    def __init__(self, *, user: Any, cap: Cap, what: str = "This page") -> None:
        self.cap = cap
        self.username = user.get_username()
        super().__init__(refusal_sentence(user=user, cap=cap, what=what))


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
                raise RoleRequired(user=request.user, cap=cap)
            return view(request, *args, **kwargs)

        wrapper.opsdash_cap = cap  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def public(view: V) -> V:
    """Marks a view that deliberately needs no login (login page, health check)."""
    view.opsdash_cap = PUBLIC  # type: ignore[attr-defined]
    return view
