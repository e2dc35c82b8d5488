"""Single sign-on end to end: OpsDash served by uvicorn, a real OpenID Connect provider
(django-oauth-toolkit in a process of its own), and a cookie-keeping HTTP client between them.

Nothing is mocked: OpsDash discovers the provider, sends the browser to its authorize page, the
user signs in there, the provider sends a code back, OpsDash exchanges it at the token endpoint
(PKCE verifier, client secret), checks the RS256 ID token against the provider's keys and the
nonce, reads userinfo and maps the groups claim to roles.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import User

from opsdash.accounts import oidc
from opsdash.accounts.models import OidcIdentity
from opsdash.core.models import AuditEntry
from tests.liveserver import serve
from tests.oidc_provider.process import Client, Provider, Response, running_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with running_provider(tmp_path_factory.mktemp("oidc-provider")) as running:
        yield running


@pytest.fixture
def opsdash(transactional_db, settings, provider: Provider) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """OpsDash's URL, configured for the provider as an admin would (before the fork)."""
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_NAME = "Example SSO"
    settings.OIDC_ROLE_MAP = {
        "ops-team": frozenset({"operator"}),
        "finance": frozenset({"manager"}),
    }
    settings.OIDC_PROVIDER_LOGOUT = True
    oidc._discovered.clear()
    with serve() as server:
        provider.allow_redirect(
            f"{server.url}/accounts/oidc/callback/", after_logout=f"{server.url}/accounts/login/"
        )
        yield server.url


def _sign_in(
    client: Client, opsdash: str, provider: Provider, username: str, *, stop_at: str | None = None
) -> Response:
    login = client.open(f"{opsdash}/accounts/login/")
    assert "Sign in with Example SSO" in login.body
    page = client.open(f"{opsdash}/accounts/oidc/start/?next=/playground/")
    assert page.url.startswith(f"{provider.url}/login/"), page.url
    return client.sign_in_at_provider(page, username, stop_at=stop_at)


def _roles(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_olga_from_ops_team_signs_in_as_an_operator_and_signs_out(opsdash, provider) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    landed = _sign_in(client, opsdash, provider, "olga")

    assert landed.status == 200 and landed.url == f"{opsdash}/playground/"
    assert _roles("olga") == {"operator"}
    olga = User.objects.get(username="olga")
    assert olga.email == "olga@example.test" and not olga.has_usable_password()
    assert OidcIdentity.objects.get(user=olga).issuer == provider.issuer
    actions = set(
        AuditEntry.objects.filter(target_id=str(olga.pk)).values_list("action", flat=True)
    )
    assert {"user.create", "user.roles"} <= actions

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', landed.body)
    assert token, "no sign-out form on the page"
    signed_out = client.open(f"{opsdash}/accounts/logout/", {"csrfmiddlewaretoken": token.group(1)})
    # Through the provider's end_session_endpoint and back: both sessions are over.
    assert signed_out.url.startswith(f"{opsdash}/accounts/login/"), signed_out.url
    after = client.open(f"{opsdash}/playground/")
    assert urlsplit(after.url).path == "/accounts/login/"
    again = client.open(f"{opsdash}/accounts/oidc/start/")
    assert again.url.startswith(f"{provider.url}/login/"), "the provider kept its session"


def test_fred_from_finance_signs_in_as_a_manager(opsdash, provider) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    landed = _sign_in(client, opsdash, provider, "fred")

    assert _roles("fred") == {"manager"}
    assert landed.status == 403  # next=/playground/: managers do not run prompts
    assert client.open(f"{opsdash}/savings/").status == 200


def test_a_group_change_at_the_provider_applies_at_the_next_sign_in(opsdash, provider) -> None:  # type: ignore[no-untyped-def]
    _sign_in(Client(), opsdash, provider, "olga")
    assert _roles("olga") == {"operator"}
    try:
        provider.set_groups("olga", ["finance", "ops-team"])
        _sign_in(Client(), opsdash, provider, "olga")
        assert _roles("olga") == {"manager", "operator"}

        provider.set_groups("olga", ["unmapped-team"])
        client = Client()
        _sign_in(client, opsdash, provider, "olga")
        assert _roles("olga") == set()
        home = client.open(f"{opsdash}/")
        assert home.status == 200 and "has no role yet" in home.body
    finally:
        provider.set_groups("olga", ["ops-team"])
    assert User.objects.filter(username="olga").count() == 1
    assert OidcIdentity.objects.count() == 1


def test_a_tampered_state_is_refused_and_the_real_one_still_works(opsdash, provider) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    callback = f"{opsdash}/accounts/oidc/callback/"
    back = _sign_in(client, opsdash, provider, "olga", stop_at=callback)
    assert back.status == 302 and back.location.startswith(callback), back
    query = parse_qs(urlsplit(back.location).query)
    assert query["code"] and query["state"]

    tampered = {"code": query["code"][0], "state": query["state"][0][:-4] + "XXXX"}
    refused = client.open(f"{callback}?{urlencode(tampered)}")
    assert urlsplit(refused.url).path == "/accounts/login/"
    assert "That sign-in could not be verified" in refused.body
    assert not User.objects.filter(username="olga").exists()

    signed_in = client.open(back.location)
    assert signed_in.url == f"{opsdash}/playground/" and _roles("olga") == {"operator"}


def test_an_existing_local_account_of_the_same_name_is_not_taken_over(opsdash, provider) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_user("olga", email="someone-else@example.test", password="local-pass-1")
    landed = _sign_in(Client(), opsdash, provider, "olga")

    assert urlsplit(landed.url).path == "/accounts/login/"
    assert "An OpsDash account named &#x27;olga&#x27; already exists" in landed.body
    assert not OidcIdentity.objects.exists() and _roles("olga") == set()


@pytest.mark.django_db
def test_a_missing_provider_is_a_sentence_on_the_sign_in_page(
    client, settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.oidc_provider.process import _free_port

    settings.OIDC_ISSUER = f"http://127.0.0.1:{_free_port()}/o"
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "id", "secret"
    settings.OIDC_NAME = "Example SSO"
    oidc._discovered.clear()
    response = client.get("/accounts/oidc/start/", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    assert "Example SSO did not answer" in response.content.decode()
