"""Personal API tokens: shown once, hashed at rest, revocable; and the demo users."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from opsdash.accounts.models import ApiToken
from opsdash.accounts.services import user_for_token

pytestmark = pytest.mark.django_db


def test_create_token_prints_the_secret_alone_on_the_last_line_and_stores_only_its_hash(admin):
    out = StringIO()
    call_command("create_token", "ada", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]

    token = ApiToken.objects.get(user=admin)
    assert secret.startswith("ops_") and len(secret) > 40
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {token.digest, token.prefix, token.name}
    assert user_for_token(secret) == admin


def test_the_tokens_page_shows_a_new_secret_once_and_revokes(as_admin, admin):
    page = as_admin.post("/accounts/tokens/", {"name": "nightly"}).content.decode()
    secret = page.split('id="new-token">')[1].split("<")[0]
    assert user_for_token(secret) == admin
    assert secret not in as_admin.get("/accounts/tokens/").content.decode()

    token = ApiToken.objects.get(name="nightly")
    as_admin.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert user_for_token(secret) is None


def test_a_user_cannot_revoke_someone_elses_token(as_operator, admin):
    from opsdash.accounts.services import create_token

    issued = create_token(user=admin, name="mine")
    assert as_operator.post(f"/accounts/tokens/{issued.token.pk}/revoke/").status_code == 404
    assert user_for_token(issued.secret) == admin


def test_a_token_of_a_deactivated_user_stops_working(admin):
    from opsdash.accounts.services import create_token

    issued = create_token(user=admin, name="t")
    User.objects.filter(pk=admin.pk).update(is_active=False)
    assert user_for_token(issued.secret) is None


def test_bootstrap_demo_creates_the_three_roles_once(settings):
    settings.DEMO_PASSWORD = "demo-password-123"
    out = StringIO()
    call_command("bootstrap", "--demo", stdout=out)
    call_command("bootstrap", "--demo", stdout=out)

    users = User.objects.order_by("username")
    assert [(u.username, [g.name for g in u.groups.all()]) for u in users] == [
        ("admin", ["admin"]),
        ("manager", ["manager"]),
        ("operator", ["operator"]),
    ]
    assert users[0].check_password("demo-password-123")
    assert "already exist" in out.getvalue()


def test_bootstrap_demo_generates_and_prints_a_password_when_none_is_set(settings):
    settings.DEMO_PASSWORD = None
    out = StringIO()
    call_command("bootstrap", "--demo", stdout=out)
    password = out.getvalue().split("password: ")[1].split()[0]
    assert User.objects.get(username="operator").check_password(password)


def test_navigation_shows_only_what_the_role_may_use(as_operator, as_admin):
    operator_nav = as_operator.get("/models/").content.decode()
    admin_nav = as_admin.get("/models/").content.decode()
    assert "Install" not in operator_nav.split("</nav>")[0]
    assert "Audit" not in operator_nav.split("</nav>")[0]
    assert "Install" in admin_nav.split("</nav>")[0] and "Audit" in admin_nav.split("</nav>")[0]


def test_login_page_signs_a_person_in_and_healthz_needs_no_login(client, admin):
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.post(
        "/accounts/login/", {"username": "ada", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get("/models/").status_code == 200
    from django.test import Client

    bad = Client().post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert "do not match" in bad.content.decode()
