"""Single sign-on by OpenID Connect, and the local-password policy.

mozilla-django-oidc runs the authorization code flow (state, nonce and PKCE checked, the ID
token's signature against the provider's keys); this module adds what OpsDash needs on top:

- the provider's endpoints from its discovery document, read at the first sign-in (a provider
  that is down must not stop OpsDash from starting) and kept for an hour;
- users found by (issuer, ``sub``), created on first sign-in, their roles set from the groups
  claim through ``OIDC_ROLE_MAP`` on every sign-in, each change in the audit log;
- a sentence on the sign-in page for every way a sign-in can fail, instead of a bare redirect;
- ``SignInForm``: with ``LOCAL_PASSWORDS`` off, a correct local password signs in superusers only
  (the break-glass for a provider that is down) and tells everyone else to use the button.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import Group, User
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from opsdash.accounts.models import OidcIdentity
from opsdash.accounts.roles import Role
from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal

log = logging.getLogger(__name__)

# Long enough that a sign-in rarely waits on discovery, short enough that a key or endpoint
# the provider moves is picked up the same day (a failed fetch is retried at the next sign-in).
DISCOVERY_TTL_SECONDS = 3600
# Where the backend leaves its sentence for the callback view (mozilla's flow only passes None).
_REFUSAL_ATTR = "_opsdash_sso_refusal"


class SignInRefused(Refusal):
    """Single sign-on reached OpsDash but cannot sign this person in; the reason says why."""

    default_code = Code.INVALID


class ProviderUnavailable(Refusal):
    default_code = Code.UNAVAILABLE


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def sign_in_options() -> dict[str, Any]:
    """What the sign-in page offers: the SSO button's name (None without SSO) and whether the
    password form is for everyone or only the superusers' break-glass."""
    return {
        "sso_name": settings.OIDC_NAME if sso_enabled() else None,
        "local_passwords": settings.LOCAL_PASSWORDS or not sso_enabled(),
    }


# Endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    userinfo: str
    jwks: str
    end_session: str


_discovered: dict[str, tuple[float, dict[str, Any]]] = {}
_discovery_lock = threading.Lock()


def _discovery(issuer: str) -> dict[str, Any]:
    with _discovery_lock:
        cached = _discovered.get(issuer)
        if cached and time.monotonic() - cached[0] < DISCOVERY_TTL_SECONDS:
            return cached[1]
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(
            f"{settings.OIDC_NAME} did not answer ({url}: {exc}). Try again in a moment; if it "
            f"stays down, an admin can check OPSDASH_OIDC_ISSUER."
        ) from exc
    # OpenID Connect Discovery 4.3: the document must name the issuer it was fetched for, or a
    # token signed by some other issuer could pass.
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        named = document.get("issuer") if isinstance(document, dict) else None
        raise ProviderUnavailable(
            f"The provider at {url} calls itself {named!r}, not {issuer!r}: set "
            f"OPSDASH_OIDC_ISSUER to the issuer it names."
        )
    with _discovery_lock:
        _discovered[issuer] = (time.monotonic(), document)
    return document


def endpoints() -> Endpoints:
    """The provider's endpoints: those set one by one, the rest from discovery."""
    given = {
        "authorization_endpoint": settings.OIDC_OP_AUTHORIZATION_ENDPOINT,
        "token_endpoint": settings.OIDC_OP_TOKEN_ENDPOINT,
        "userinfo_endpoint": settings.OIDC_OP_USER_ENDPOINT,
        "jwks_uri": settings.OIDC_OP_JWKS_ENDPOINT,
    }
    found = dict(given)
    if not all(given.values()):
        document = _discovery(settings.OIDC_ISSUER)
        for name, value in given.items():
            found[name] = value or str(document.get(name) or "")
        end_session = settings.OIDC_OP_END_SESSION_ENDPOINT or str(
            document.get("end_session_endpoint") or ""
        )
    else:
        end_session = settings.OIDC_OP_END_SESSION_ENDPOINT
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise ProviderUnavailable(
            f"{settings.OIDC_NAME} does not publish its {', '.join(missing)}: set "
            f"OPSDASH_OIDC_AUTHORIZATION_ENDPOINT, _TOKEN_ENDPOINT, _USERINFO_ENDPOINT and "
            f"_JWKS_ENDPOINT."
        )
    return Endpoints(
        authorization=found["authorization_endpoint"],
        token=found["token_endpoint"],
        userinfo=found["userinfo_endpoint"],
        jwks=found["jwks_uri"],
        end_session=end_session,
    )


# Users and roles -----------------------------------------------------------------------------


def groups_in(claims: Mapping[str, Any]) -> list[str]:
    """The groups claim as a list: providers send a list, a single string or nothing."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return [str(item) for item in value]
    return []


def roles_for(groups: Iterable[str]) -> frozenset[Role]:
    """The OpsDash roles ``OIDC_ROLE_MAP`` gives these groups (none for unmapped groups)."""
    role_map: Mapping[str, frozenset[str]] = settings.OIDC_ROLE_MAP
    return frozenset(Role(role) for group in groups for role in role_map.get(group, ()))


def _username_from(claims: Mapping[str, Any]) -> str:
    username = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or "").strip()
    if not username:
        raise SignInRefused(
            f"{settings.OIDC_NAME} sent neither {settings.OIDC_USERNAME_CLAIM} nor an email "
            f"address, so OpsDash has no name for this account: an admin can choose another "
            f"claim with OPSDASH_OIDC_USERNAME_CLAIM."
        )
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise SignInRefused(
            f"The name {username!r} from {settings.OIDC_NAME} is not a valid OpsDash username "
            f"(letters, digits and @.+-_ only): an admin can choose another claim with "
            f"OPSDASH_OIDC_USERNAME_CLAIM."
        ) from None
    return username[:150]


def _linkable(user: User, claims: Mapping[str, Any]) -> bool:
    """Whether a first sign-in may take over an existing account of the same name: one made
    for single sign-on (no password of its own), or with the email the provider vouches for."""
    if user.oidc_identities.exists():
        return False
    if not user.has_usable_password():
        return True
    email = str(claims.get("email") or "")
    return bool(email and user.email and claims.get("email_verified") is True) and (
        email.casefold() == user.email.casefold()
    )


def _user_target(user: User) -> Target:
    return Target.of(user, type="user", label=user.get_username())


def _set_roles(*, user: User, roles: frozenset[Role], groups: list[str]) -> None:
    names = {role.value for role in Role}
    current = set(user.groups.filter(name__in=names).values_list("name", flat=True))
    wanted = {role.value for role in roles}
    if current == wanted:
        return
    user.groups.remove(*Group.objects.filter(name__in=current - wanted))
    # get_or_create: the groups come from a data migration, which a flushed database lacks.
    user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in wanted - current))
    record(
        actor=user,
        action="user.roles",
        target=_user_target(user),
        detail={
            "via": "single sign-on",
            "before": sorted(current),
            "after": sorted(wanted),
            "groups": groups[:50],
        },
    )


@transaction.atomic
def sign_in_from_claims(*, claims: Mapping[str, Any]) -> User:
    """The user these verified claims belong to, created on the first sign-in, with name,
    email and roles brought up to date. An inactive user is returned unchanged (the caller
    refuses it). Refuses with a sentence when no account can be given."""
    issuer = settings.OIDC_ISSUER
    subject = str(claims.get("sub") or "")
    if not subject:
        raise SignInRefused(f"{settings.OIDC_NAME} sent no subject (sub) for this account.")
    identity = (
        OidcIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    )
    if identity is not None:
        user = identity.user
    else:
        username = _username_from(claims)
        existing = User.objects.filter(username__iexact=username).first()
        if existing is not None and not _linkable(existing, claims):
            raise SignInRefused(
                f"An OpsDash account named {existing.get_username()!r} already exists and is "
                f"not linked to this {settings.OIDC_NAME} account: ask an admin to rename one "
                f"of them, or to give the OpsDash account the same verified email address."
            )
        if existing is None:
            user = User.objects.create_user(username, email=str(claims.get("email") or ""))
            record(
                actor=user,
                action="user.create",
                target=_user_target(user),
                detail={"via": "single sign-on", "issuer": issuer},
            )
        else:
            user = existing
        identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    if not user.is_active:
        return user
    changed = []
    for field, claim in (
        ("email", "email"),
        ("first_name", "given_name"),
        ("last_name", "family_name"),
    ):
        value = str(claims.get(claim) or "")[:150]
        if value and getattr(user, field) != value:
            setattr(user, field, value)
            changed.append(field)
    if changed:
        user.save(update_fields=changed)
    OidcIdentity.objects.filter(pk=identity.pk).update(last_sign_in_at=timezone.now())
    groups = groups_in(claims)
    _set_roles(user=user, roles=roles_for(groups), groups=groups)
    return user


# mozilla-django-oidc glue --------------------------------------------------------------------


class OpsDashOIDCBackend(OIDCAuthenticationBackend):
    """The authentication backend for the provider's callback (``AUTHENTICATION_BACKENDS``).

    Django builds every backend for every ``authenticate()``, password sign-ins included, so
    the endpoints are looked up only once a callback with a code arrives.
    """

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        # Only the callback view passes a nonce; a password sign-in never reaches the provider.
        if not sso_enabled() or request is None or "nonce" not in kwargs or "password" in kwargs:
            return None
        found = endpoints()
        self.OIDC_OP_TOKEN_ENDPOINT = found.token
        self.OIDC_OP_USER_ENDPOINT = found.userinfo
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        user: User | None = super().authenticate(request, **kwargs)
        return user

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        # mozilla checks the signature and nonce but not who issued the token or for whom.
        if str(payload.get("iss", "")).rstrip("/") != settings.OIDC_ISSUER:
            raise SuspiciousOperation(f"ID token issued by {payload.get('iss')!r}")
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if settings.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation(f"ID token for {audience!r}")
        return payload

    def get_or_create_user(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> User | None:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if str(userinfo.get("sub", "")) != str(payload.get("sub", "")):
            raise SuspiciousOperation("userinfo answered for another subject")
        # Some providers put the groups only in the ID token, others only in userinfo.
        claims = {**payload, **userinfo}
        try:
            return sign_in_from_claims(claims=claims)
        except SignInRefused as refused:
            log.warning("single sign-on refused %r: %s", claims.get("sub"), refused.reason)
            setattr(self.request, _REFUSAL_ATTR, refused.reason)
            return None


def _back_to_sign_in(request: HttpRequest, sentence: str) -> HttpResponse:
    messages.error(request, sentence)
    return redirect(settings.LOGIN_URL)


class StartView(OIDCAuthenticationRequestView):
    """``/accounts/oidc/start/``: off to the provider, with state, nonce and PKCE challenge."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured on this server.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoints().authorization
        except ProviderUnavailable as exc:
            return _back_to_sign_in(request, exc.reason)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        response: HttpResponse = super().get(request)
        return response


class CallbackView(OIDCAuthenticationCallbackView):
    """``/accounts/oidc/callback/``: the provider sends the browser back here with a code."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured on this server.")
        try:
            response: HttpResponse = super().get(request)
        except SuspiciousOperation as exc:
            # A state this browser never started, a replayed code, a bad signature: someone
            # else's sign-in link, or an attack. Not a server error, so no traceback.
            log.warning("single sign-on callback refused: %s", exc)
            return _back_to_sign_in(
                request,
                f"That sign-in could not be verified (it was not started in this browser, or "
                f"was already used). Start again with “Sign in with {settings.OIDC_NAME}”.",
            )
        except (requests.RequestException, ValueError) as exc:
            log.warning("single sign-on: the provider failed the code exchange: %s", exc)
            return _back_to_sign_in(
                request,
                f"{settings.OIDC_NAME} did not complete the sign-in ({exc}). Try again; if it "
                f"keeps failing, an admin can check OPSDASH_OIDC_CLIENT_ID and _SECRET.",
            )
        except ProviderUnavailable as exc:
            return _back_to_sign_in(request, exc.reason)
        return response

    @property
    def failure_url(self) -> str:
        return resolve_url(settings.LOGIN_URL)

    def login_failure(self) -> HttpResponse:
        request = self.request
        user = getattr(self, "user", None)
        if request.GET.get("error"):
            detail = request.GET.get("error_description") or request.GET["error"]
            sentence = f"{settings.OIDC_NAME} did not sign you in: {detail[:300]}"
        elif user is not None and not user.is_active:
            sentence = "Your OpsDash account is deactivated: ask an admin to reactivate it."
        else:
            sentence = getattr(request, _REFUSAL_ATTR, None) or (
                f"The sign-in with {settings.OIDC_NAME} did not complete (it may have been "
                f"started in another browser or tab). Start again with the button."
            )
        return _back_to_sign_in(request, sentence)


def provider_logout_url(request: HttpRequest) -> str | None:
    """Where to send a signing-out browser so the provider's session ends too (OpenID Connect
    RP-initiated logout), or None: not asked for, signed in with a password, or the provider
    has no end_session_endpoint. Read it before the session is flushed."""
    id_token = request.session.get("oidc_id_token")
    if not (sso_enabled() and settings.OIDC_PROVIDER_LOGOUT and id_token):
        return None
    try:
        end_session = endpoints().end_session
    except ProviderUnavailable:
        return None  # signing out of OpsDash must not wait on a provider that is down
    if not end_session:
        return None
    back = request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL))
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": back,
        }
    )
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"


start = StartView.as_view()
callback = CallbackView.as_view()


# Local passwords -----------------------------------------------------------------------------


class SignInForm(AuthenticationForm):
    """The sign-in form. With ``LOCAL_PASSWORDS`` off a right password still fails for anyone
    but a superuser. The refusal comes after the password check, so a wrong password reads as
    wrong whoever's account it is. ``refusal`` is the sentence the page shows."""

    refusal = ""

    def confirm_login_allowed(self, user: User) -> None:
        super().confirm_login_allowed(user)
        if settings.LOCAL_PASSWORDS:
            return
        if user.is_superuser:
            # The break-glass: worth a line in the log each time it is used.
            log.warning("superuser %s signed in with a local password", user.get_username())
            return
        self.refusal = (
            f"Local passwords are turned off on this server: sign in with "
            f"{settings.OIDC_NAME} instead. (Only superusers may still use a password, "
            f"for when {settings.OIDC_NAME} is down.)"
        )
        raise ValidationError(self.refusal, code="local_passwords_off")
