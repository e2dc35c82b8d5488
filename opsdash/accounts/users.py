"""Local users managed in the app: create or invite, roles, deactivate, reactivate, one-time
links to set a password, and a user's own password change. Every change is audited.

The Users page, ``/api/users`` and the OIDC backend call these verbs; none of them reads a
request. Roles are the Django groups named in ``opsdash.accounts.roles.Role``.

A one-time link is Django's ``PasswordResetTokenGenerator``: its token hashes the password and
the last sign-in, so it stops working once used (the password changed) and after
``PASSWORD_RESET_TIMEOUT``; nothing about it is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

from opsdash.accounts.models import ApiToken, OidcIdentity
from opsdash.accounts.roles import Role, roles_of
from opsdash.accounts.services import revoke_token
from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal

log = logging.getLogger(__name__)

SignIn = Literal["local", "sso", "invited"]


class UserRefused(Refusal):
    """A change to a user that cannot be made; the reason says why and what to do instead."""


def _target(user: User) -> Target:
    return Target.of(user, type="user", label=user.get_username())


# --- reading -------------------------------------------------------------------------------


def with_sign_in(users: QuerySet[User]) -> QuerySet[User]:
    """``users`` annotated so ``sign_in_kind`` needs no query per user (a listing's shape)."""
    return users.annotate(
        _opsdash_sso=Exists(OidcIdentity.objects.filter(user=OuterRef("pk")))
    ).prefetch_related(Prefetch("groups", queryset=Group.objects.order_by("name")))


def sign_in_kind(user: User) -> SignIn:
    """``sso`` (single sign-on made the account: it has a provider identity), ``local`` (a
    password) or ``invited`` (neither yet: the set-password link is unused)."""
    sso = getattr(user, "_opsdash_sso", None)
    if sso is None:
        sso = OidcIdentity.objects.filter(user=user).exists()
    if sso:
        return "sso"
    return "local" if user.has_usable_password() else "invited"


def role_names(user: User) -> list[str]:
    """The user's roles by name; from prefetched groups when the caller prefetched them."""
    known = {role.value for role in Role}
    return sorted(group.name for group in user.groups.all() if group.name in known)


def link_valid_for() -> str:
    """How long a one-time link works, in words (``PASSWORD_RESET_TIMEOUT``)."""
    seconds = int(settings.PASSWORD_RESET_TIMEOUT)
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, round(seconds / 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"


def user_json(user: User) -> dict[str, object]:
    """A user as ``/api/users`` answers it."""
    return {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name(),
        "email": user.email,
        "roles": role_names(user),
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "sign_in": sign_in_kind(user),
        "last_login": user.last_login.isoformat() if user.last_login else None,
        "date_joined": user.date_joined.isoformat(),
    }


# --- validation ----------------------------------------------------------------------------


def _roles(names: Iterable[str]) -> frozenset[Role]:
    wanted = [str(name).strip().lower() for name in names]
    known_names = {role.value for role in Role}
    unknown = sorted({name for name in wanted if name not in known_names})
    if unknown:
        known = ", ".join(role.value for role in Role)
        raise UserRefused(
            f"Unknown role {', '.join(repr(n) for n in unknown)}: roles are {known}.",
            code=Code.INVALID_PARAM,
            param="roles",
        )
    if not wanted:
        raise UserRefused(
            "Give the user at least one role (operator, admin or manager); to take all access "
            "away, deactivate the user instead.",
            code=Code.INVALID_PARAM,
            param="roles",
        )
    return frozenset(Role(name) for name in wanted)


def _username(raw: str) -> str:
    username = raw.strip()
    if not username:
        raise UserRefused("Give a username.", code=Code.INVALID_PARAM, param="username")
    if len(username) > 150:
        raise UserRefused(
            "A username has at most 150 characters.", code=Code.INVALID_PARAM, param="username"
        )
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise UserRefused(
            f"“{username[:40]}” is not a valid username: use letters, digits and @ . + - _ only.",
            code=Code.INVALID_PARAM,
            param="username",
        ) from None
    # Usernames are case-sensitive to Django but not to people: "Ada" and "ada" are one person.
    if User.objects.filter(username__iexact=username).exists():
        raise UserRefused(
            f"There is already a user named “{username}”: pick another username, or edit that "
            "user.",
            code=Code.CONFLICT,
            param="username",
        )
    return username


def _email(raw: str) -> str:
    email = raw.strip()
    if not email:
        return ""
    try:
        validate_email(email)
    except ValidationError:
        raise UserRefused(
            f"“{email[:80]}” is not an email address (it should look like name@example.com).",
            code=Code.INVALID_PARAM,
            param="email",
        ) from None
    return email


def _check_may_change(*, user: User, by: User | None) -> None:
    # An admin who could reset a superuser's password could become one.
    if user.is_superuser and by is not None and not by.is_superuser:
        raise UserRefused(
            f"“{user.get_username()}” is a superuser: only a superuser may change them.",
            code=Code.CONFLICT,
        )


def _is_admin(user: User) -> bool:
    return user.is_superuser or Role.ADMIN in roles_of(user)


def _check_not_last_admin(*, user: User, action: str) -> None:
    """Refuse a change that would leave no active admin to manage users.

    The admins' rows are locked first (PostgreSQL), so two admins removing each other at once
    cannot both pass the check; SQLite serialises the writes anyway."""
    admins = set(
        User.objects.select_for_update(of=("self",))
        .filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN.value))
        .values_list("pk", flat=True)
    )
    if admins <= {user.pk}:
        raise UserRefused(
            f"“{user.get_username()}” is the last active admin: make someone else an admin "
            f"before you {action}.",
            code=Code.CONFLICT,
        )


def _locked(user: User) -> User:
    return User.objects.select_for_update().get(pk=user.pk)


def _fresh(user: User) -> User:
    # roles_of caches on the instance; answer with what the database now holds.
    return User.objects.get(pk=user.pk)


# --- one-time links ------------------------------------------------------------------------


def _set_password_url(user: User) -> str:
    from opsdash.notify.mail import absolute_url

    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return absolute_url(reverse("accounts:set_password", kwargs={"uidb64": uidb64, "token": token}))


def user_for_link(*, uidb64: str, token: str) -> User | None:
    """The active user a set-password link belongs to, while the link still works; else None."""
    try:
        pk = int(force_str(urlsafe_base64_decode(uidb64)))
    except (ValueError, TypeError, OverflowError):
        return None
    user = User.objects.filter(pk=pk, is_active=True).first()
    if user is None or not default_token_generator.check_token(user, token):
        return None
    return user


@dataclass(frozen=True)
class Mailed:
    """Whether a link went out by mail, and a sentence saying so (or why not)."""

    sent: bool
    note: str


def mail_set_password_link(*, user: User, url: str, invited: bool, by: User | None) -> Mailed:
    """Mail ``url`` to the user when SMTP is configured and they have an address. Never raises:
    the admin always sees the link too, so a failed delivery only needs saying."""
    from opsdash.notify.mail import MailFailed, send_email, smtp_configured

    if not user.email:
        return Mailed(False, "The user has no email address: give them the link yourself.")
    if not smtp_configured():
        return Mailed(
            False,
            "Mail is not configured (OPSDASH_SMTP_HOST), so nothing was sent: give the user "
            "the link yourself.",
        )
    who = by.get_username() if by is not None else "An administrator"
    if invited:
        subject = "Your OpsDash account"
        first = f"{who} made you an OpsDash account, “{user.get_username()}”."
    else:
        subject = "Set a new OpsDash password"
        first = f"{who} asked for a new password for your OpsDash account “{user.get_username()}”."
    text = (
        f"{first}\n\nChoose your password here (the link works once, for {link_valid_for()}):\n"
        f"{url}\n\nIf you did not expect this, ignore this message.\n"
    )
    try:
        send_email(to=[user.email], subject=subject, text=text)
    except MailFailed as exc:
        log.warning("set-password mail to %s failed: %s", user.email, exc.reason)
        return Mailed(False, f"The mail could not be sent ({exc.reason}): give the link yourself.")
    return Mailed(True, f"The link was mailed to {user.email}.")


# --- changes -------------------------------------------------------------------------------


def _assign(user: User, roles: frozenset[Role]) -> None:
    groups = [Group.objects.get_or_create(name=role.value)[0] for role in sorted(roles)]
    others = user.groups.exclude(name__in=[role.value for role in Role])
    user.groups.set([*others, *groups])


@transaction.atomic
def create_user(
    *, username: str, email: str, roles: Iterable[str], by: User | None
) -> tuple[User, str]:
    """A new active user with ``roles`` and no password yet, and the one-time link (absolute
    URL) with which they choose one. Refuses a taken username, a bad email or an unknown role."""
    username = _username(username)
    email = _email(email)
    wanted = _roles(roles)
    user = User.objects.create_user(username=username, email=email)  # password unusable
    _assign(user, wanted)
    record(
        actor=by,
        action="user.create",
        target=_target(user),
        detail={"email": email, "roles": sorted(r.value for r in wanted)},
    )
    return user, _set_password_url(user)


@transaction.atomic
def set_roles(*, user: User, roles: Iterable[str], by: User | None) -> User:
    """Replace the user's roles; the last active admin keeps theirs."""
    wanted = _roles(roles)
    user = _fresh(user)
    _check_may_change(user=user, by=by)
    before = frozenset(roles_of(user))
    if before == wanted:
        return _fresh(user)
    if Role.ADMIN in before and Role.ADMIN not in wanted and not user.is_superuser:
        _check_not_last_admin(user=user, action="take the admin role away")
    _assign(user, wanted)
    record(
        actor=by,
        action="user.roles",
        target=_target(user),
        detail={
            "before": sorted(r.value for r in before),
            "after": sorted(r.value for r in wanted),
        },
    )
    return _fresh(user)


@transaction.atomic
def set_email(*, user: User, email: str, by: User | None) -> User:
    """Change the user's address (blank clears it); their unused one-time links stop working."""
    email = _email(email)
    user = _fresh(user)
    _check_may_change(user=user, by=by)
    if email != user.email:
        before, user.email = user.email, email
        user.save(update_fields=["email"])
        record(
            actor=by,
            action="user.email",
            target=_target(user),
            detail={"before": before, "after": email},
        )
    return _fresh(user)


def end_sessions(*, user: User) -> int:
    """Delete every session signed in as ``user`` from the session store; how many.

    Sessions do not index their user, so each live one is decoded; through the engine's own
    store, so a cached_db engine's cache forgets them too."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    live = Session.objects.filter(expire_date__gt=timezone.now())
    for session in live.iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            store(session_key=session.session_key).delete()
            ended += 1
    return ended


@transaction.atomic
def deactivate_user(*, user: User, by: User | None) -> User:
    """The user can no longer sign in: their sessions end now and their personal API tokens
    are revoked. Refused for oneself and for the last active admin."""
    if by is not None and by.pk == user.pk:
        raise UserRefused(
            "You cannot deactivate yourself: ask another admin to do it.", code=Code.CONFLICT
        )
    _check_may_change(user=user, by=by)
    # The caller's instance may be stale (another request changed it): decide on the row.
    if not _locked(user).is_active:
        return _fresh(user)
    if _is_admin(user):
        _check_not_last_admin(user=user, action="deactivate them")
    User.objects.filter(pk=user.pk).update(is_active=False)
    tokens = list(ApiToken.objects.filter(user=user, revoked_at__isnull=True))
    for token in tokens:
        revoke_token(token=token, user=by)
    sessions = end_sessions(user=user)
    record(
        actor=by,
        action="user.deactivate",
        target=_target(user),
        detail={"sessions_ended": sessions, "tokens_revoked": len(tokens)},
    )
    return _fresh(user)


@transaction.atomic
def reactivate_user(*, user: User, by: User | None) -> User:
    """The user may sign in again; the tokens revoked when they were deactivated stay revoked."""
    _check_may_change(user=user, by=by)
    if _locked(user).is_active:
        return _fresh(user)
    User.objects.filter(pk=user.pk).update(is_active=True)
    record(actor=by, action="user.reactivate", target=_target(user))
    return _fresh(user)


def password_reset_link(*, user: User, by: User | None) -> str:
    """A new one-time link (absolute URL) for the user to choose a password; their current
    password keeps working until they use it."""
    user = _fresh(user)
    _check_may_change(user=user, by=by)
    if not user.is_active:
        raise UserRefused(
            f"“{user.get_username()}” is deactivated: reactivate them first.",
            code=Code.CONFLICT,
        )
    record(actor=by, action="user.password_reset", target=_target(user))
    return _set_password_url(user)


def set_password(*, user: User, password: str, by: User | None, via: str) -> None:
    """Store a password the caller's form already validated; ``via`` is ``link`` or ``self``.
    Other sessions of the user end (Django ties a session to the password's hash)."""
    user.set_password(password)
    user.save(update_fields=["password"])
    action = "user.password_change" if via == "self" else "user.password_set"
    record(actor=by if by is not None else user, action=action, target=_target(user))
