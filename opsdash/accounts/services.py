"""Accounts: demo users, personal API tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from axes.models import AccessAttempt
from axes.utils import reset as reset_axes_attempts
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone

from opsdash.accounts.models import ApiToken
from opsdash.accounts.roles import Role
from opsdash.core.audit import Target, record

log = logging.getLogger(__name__)

TOKEN_PREFIX = "ops_"
# Writing last_used_at on every request would turn every API read into a write.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(secret: str) -> str:
    # Tokens are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


def create_token(*, user: User, name: str) -> IssuedToken:
    """Issue a personal token; the returned secret is the only copy there will ever be."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip() or "token", prefix=secret[:10], digest=_digest(secret)
    )
    record(actor=user, action="token.create", target=_token_target(token))
    return IssuedToken(token=token, secret=secret)


def revoke_token(*, token: ApiToken, user: User | None = None) -> None:
    """From now on the token answers 401; ``user`` is who revoked it (the owner by default)."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        actor = user if user is not None else token.user
        record(actor=actor, action="token.revoke", target=_token_target(token))


def _token_target(token: ApiToken) -> Target:
    label = f"{token.user.get_username()}: {token.name} ({token.prefix}…)"
    return Target.of(token, type="token", label=label)


def user_for_token(secret: str) -> User | None:
    """The active user a bearer secret belongs to, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=_digest(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


@dataclass(frozen=True)
class DemoUser:
    username: str
    created: bool


@transaction.atomic
def create_demo_users(*, password: str) -> list[DemoUser]:
    """The users ``admin``, ``operator`` and ``manager`` in their roles; existing ones stay."""
    result = []
    for role in (Role.ADMIN, Role.OPERATOR, Role.MANAGER):
        user, created = User.objects.get_or_create(username=role.value)
        if created:
            user.set_password(password)
            user.save()
        user.groups.add(Group.objects.get(name=role.value))
        result.append(DemoUser(username=role.value, created=created))
    return result


@dataclass(frozen=True)
class Lockout:
    username: str
    failures: int
    last_try: datetime
    until: datetime


def locked_out_accounts() -> list[Lockout]:
    """Usernames django-axes refuses now: enough wrong passwords within the cool-off time."""
    cool_off: timedelta = settings.AXES_COOLOFF_TIME
    rows = (
        AccessAttempt.objects.filter(attempt_time__gte=timezone.now() - cool_off)
        .values("username")
        .annotate(failures=Sum("failures_since_start"), last_try=Max("attempt_time"))
        .filter(failures__gte=settings.AXES_FAILURE_LIMIT)
        .order_by("username")
    )
    return [
        Lockout(
            username=row["username"],
            failures=row["failures"],
            last_try=row["last_try"],
            until=row["last_try"] + cool_off,
        )
        for row in rows
    ]


def unlock_account(*, username: str, user: User) -> int:
    """Forget the username's failed sign-ins so it may sign in at once; how many were dropped."""
    dropped = reset_axes_attempts(username=username)
    log.info("%s unlocked sign-in for %r (%d failed tries forgotten)", user, username, dropped)
    record(
        actor=user,
        action="user.unlock",
        target=Target(type="user", id=username[:64], label=username[:300]),
        detail={"failed_tries_forgotten": dropped},
    )
    return dropped
