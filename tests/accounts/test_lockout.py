"""Sign-in throttling: wrong passwords lock an account for a while, the page says so and for how
long, an admin unlocks it, and API tokens and the other personas keep working."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from opsdash.accounts.services import create_token
from tests.fixtures.personas import PASSWORD

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/accounts/login/", {"username": username, "password": password})


def lock_out(username: str, settings) -> None:  # type: ignore[no-untyped-def]
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(Client(), username, "wrong password")


def test_wrong_passwords_lock_the_account_and_the_page_says_for_how_long(admin, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert "do not match" in sign_in(Client(), "ada", "nope").content.decode()

    locked = sign_in(Client(), "ada", "nope")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many wrong passwords" in page and "15 minutes" in page
    assert '<form method="post"' in page, "the sign-in page itself, not a bare error"

    client = Client()
    refused = sign_in(client, "ada", PASSWORD)
    assert refused.status_code == 429, "the right password does not work while locked"
    assert client.get("/models/").status_code == 302


def test_an_admin_unlocks_an_account_with_axes_reset_username(admin, settings):
    lock_out("ada", settings)
    call_command("axes_reset_username", "ada", stdout=StringIO())
    client = Client()
    assert sign_in(client, "ada", PASSWORD).status_code == 302
    assert client.get("/models/").status_code == 200


def test_a_locked_account_does_not_lock_the_others(admin, operator, settings):
    lock_out("ada", settings)
    assert sign_in(Client(), "otto", PASSWORD).status_code == 302


def test_api_tokens_keep_working_while_sign_in_is_throttled(admin, settings):
    secret = create_token(user=admin, name="t").secret
    lock_out("ada", settings)
    response = Client().get("/api/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200


def test_an_admin_sees_the_locked_account_and_unlocks_it_with_a_button(
    as_admin, operator, settings
):
    lock_out("otto", settings)
    page = as_admin.get("/accounts/lockouts/").content.decode()
    table = page.split('data-testid="lockouts"')[1]
    assert "otto" in table and f"<td>{settings.AXES_FAILURE_LIMIT}</td>" in table

    response = as_admin.post("/accounts/lockouts/", {"username": "otto"})
    assert response.status_code == 302
    assert "otto" not in as_admin.get("/accounts/lockouts/").content.decode().split("<tbody>")[1]
    assert sign_in(Client(), "otto", PASSWORD).status_code == 302


def test_only_admins_may_unlock_accounts(as_operator, admin, settings):
    lock_out("ada", settings)
    assert as_operator.post("/accounts/lockouts/", {"username": "ada"}).status_code == 403
    assert sign_in(Client(), "ada", PASSWORD).status_code == 429
