"""Single sign-on's settings and the sign-in page around it: what is refused at start, what the
page offers, and local passwords turned off (the whole flow is in test_oidc.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from opsdash import settings as opsdash_settings
from opsdash.accounts.roles import Role
from tests.fixtures.personas import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def test_the_role_names_settings_accepts_are_the_roles() -> None:
    assert set(opsdash_settings._ROLE_NAMES) == {role.value for role in Role}


def test_the_role_map_reads_groups_and_roles() -> None:
    parsed = opsdash_settings._oidc_role_map(
        " ops-team=operator, it=admin,it=operator,,fin=manager"
    )
    assert parsed == {
        "ops-team": {"operator"},
        "it": {"admin", "operator"},
        "fin": {"manager"},
    }


@pytest.mark.parametrize("value", ["ops-team", "ops-team=owner", "=admin"])
def test_a_malformed_role_map_is_refused_with_an_example(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="ops-team=operator,finance=manager"):
        opsdash_settings._oidc_role_map(value)


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({"OPSDASH_OIDC_CLIENT_ID": "x"}, "OPSDASH_OIDC_CLIENT_ID is set but OPSDASH_OIDC_ISSUER"),
        ({"OPSDASH_LOCAL_PASSWORDS": "false"}, "otherwise only superusers could sign in"),
        (
            {"OPSDASH_OIDC_ISSUER": "https://sso.example.test", "OPSDASH_OIDC_CLIENT_ID": "x"},
            "OPSDASH_OIDC_ISSUER is set but OPSDASH_OIDC_CLIENT_SECRET is not",
        ),
        ({"OPSDASH_OIDC_ISSUER": "sso.example.test"}, "must be the provider's URL"),
    ],
)
def test_half_a_configuration_stops_opsdash_from_starting(
    env: dict[str, str], sentence: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import opsdash.settings"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "OPSDASH_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and sentence in done.stderr


def test_a_whole_configuration_starts(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    env = {
        "OPSDASH_OIDC_ISSUER": "https://sso.example.test/realms/staff/",
        "OPSDASH_OIDC_CLIENT_ID": "opsdash",
        "OPSDASH_OIDC_CLIENT_SECRET_FILE": str(secret),
        "OPSDASH_OIDC_ROLE_MAP": "ops=operator",
        "OPSDASH_LOCAL_PASSWORDS": "false",
    }
    code = (
        "from opsdash import settings as s; "
        "print(s.OIDC_ISSUER, s.OIDC_RP_CLIENT_SECRET, sorted(s.OIDC_ROLE_MAP['ops']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "OPSDASH_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "https://sso.example.test/realms/staff",
        "s3cret",
        "['operator']",
    ]


@pytest.fixture
def sso(settings):  # type: ignore[no-untyped-def]
    settings.OIDC_ISSUER = "https://sso.example.test"
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "opsdash", "secret"
    settings.OIDC_NAME = "Example SSO"
    return settings


@pytest.mark.django_db
def test_without_single_sign_on_the_page_has_no_button_and_its_urls_are_404(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/accounts/login/").content.decode()
    assert 'id="sso-sign-in"' not in page and 'name="password"' in page
    assert client.get("/accounts/oidc/start/").status_code == 404
    assert client.get("/accounts/oidc/callback/?code=a&state=b").status_code == 404


@pytest.mark.django_db
def test_with_single_sign_on_the_page_offers_the_button_and_passwords(client, sso) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/accounts/login/?next=/models/").content.decode()
    assert 'href="/accounts/oidc/start/?next=/models/"' in page
    assert "Sign in with Example SSO" in page
    assert "Or with a password set in OpsDash" in page and "<details" not in page


@pytest.mark.django_db
def test_local_passwords_off_refuse_a_right_password_with_a_sentence(
    client, sso, operator: User
) -> None:
    sso.LOCAL_PASSWORDS = False
    page = client.get("/accounts/login/").content.decode()
    assert "Passwords set in OpsDash are turned off" in page
    assert "Superuser sign-in with a password" in page

    refused = client.post("/accounts/login/", {"username": "otto", "password": PASSWORD})
    assert refused.status_code == 200
    assert "Local passwords are turned off on this server: sign in with Example SSO" in (
        refused.content.decode()
    )
    assert "_auth_user_id" not in client.session

    wrong = client.post("/accounts/login/", {"username": "otto", "password": "wrong"})
    assert "That username and password do not match" in wrong.content.decode()


@pytest.mark.django_db
def test_local_passwords_off_still_let_a_superuser_in_as_the_break_glass(sso) -> None:  # type: ignore[no-untyped-def]
    sso.LOCAL_PASSWORDS = False
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    signed_in = client.post("/accounts/login/", {"username": "root", "password": PASSWORD})
    assert signed_in.status_code == 302
    assert client.get("/accounts/lockouts/").status_code == 200
