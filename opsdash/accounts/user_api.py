"""GET/POST /api/users and GET/PATCH /api/users/{id}: the Users page for scripts, admins only.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.

Refusals from ``opsdash.accounts.users`` keep their code's status (a taken username 409, an
unknown role or bad email 400, the last admin 409); a body that fails the schema is 422.
"""

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Query, Router, Schema, Status

from opsdash.accounts import users
from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, MAX_DB_INT, DbId, responses

router = Router(tags=["users"])


class UserOut(Schema):
    id: int
    username: str
    name: str
    email: str
    roles: list[str]
    is_active: bool
    is_superuser: bool
    sign_in: str = Field(description="local (a password), sso, or invited (link not used yet)")
    last_login: str | None
    date_joined: str


class UserList(Schema):
    items: list[UserOut]
    count: int


class CreatedOut(UserOut):
    set_password_url: str = Field(description="the one-time link; shown here only")
    mailed: bool = Field(description="whether the link was also mailed to the user")
    mail_note: str


class UserIn(Schema):
    username: str
    email: str = ""
    roles: list[str] = Field(description="operator, admin and/or manager; at least one")


class UserPatch(Schema):
    email: str | None = None
    roles: list[str] | None = None
    is_active: bool | None = Field(
        None, description="false: sessions end and tokens are revoked; true: may sign in again"
    )


class ListQuery(Schema):
    limit: int = Field(100, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_DB_INT)


def _by(request: HttpRequest) -> User:
    return request.user  # type: ignore[return-value]


@router.get("/users", response=responses({200: UserList}, 422), auth=api_auth(Cap.MANAGE_USERS))
def list_users(request: HttpRequest, query: Query[ListQuery]) -> dict[str, Any]:
    """Every user by username: ``{"items": [...], "count"}``."""
    found = users.with_sign_in(User.objects.order_by("username"))
    page = found[query.offset : query.offset + query.limit]
    return {"items": [users.user_json(user) for user in page], "count": found.count()}


@router.post(
    "/users",
    response=responses({201: CreatedOut}, *BODY_STATUSES, 409),
    auth=api_auth(Cap.MANAGE_USERS),
)
def create_user(request: HttpRequest, payload: UserIn) -> Status:
    """Create a user; the answer carries the one-time ``set_password_url`` (mailed too when
    SMTP is configured and the user has an address). Audited as ``user.create``."""
    user, url = users.create_user(
        username=payload.username, email=payload.email, roles=payload.roles, by=_by(request)
    )
    mailed = users.mail_set_password_link(user=user, url=url, invited=True, by=_by(request))
    body = users.user_json(user) | {
        "set_password_url": url,
        "mailed": mailed.sent,
        "mail_note": mailed.note,
    }
    return Status(201, body)


@router.get(
    "/users/{user_id}",
    response=responses({200: UserOut}, 404, 422),
    auth=api_auth(Cap.MANAGE_USERS),
)
def get_user(request: HttpRequest, user_id: DbId) -> dict[str, Any]:
    return users.user_json(get_object_or_404(User, pk=user_id))


@router.patch(
    "/users/{user_id}",
    response=responses({200: UserOut}, *BODY_STATUSES, 404, 409),
    auth=api_auth(Cap.MANAGE_USERS),
)
def patch_user(request: HttpRequest, user_id: DbId, payload: UserPatch) -> dict[str, Any]:
    """Change any of ``email``, ``roles`` and ``is_active``; all or none are applied."""
    user = get_object_or_404(User, pk=user_id)
    by = _by(request)
    with transaction.atomic():
        if payload.email is not None:
            user = users.set_email(user=user, email=payload.email, by=by)
        if payload.roles is not None:
            user = users.set_roles(user=user, roles=payload.roles, by=by)
        if payload.is_active is False:
            user = users.deactivate_user(user=user, by=by)
        elif payload.is_active is True:
            user = users.reactivate_user(user=user, by=by)
    return users.user_json(user)
