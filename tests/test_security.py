"""Deployment hardening: behind a TLS proxy the settings pass ``check --deploy`` and pages get
HSTS, secure cookies and HTTPS redirects; every page carries a Content-Security-Policy that
the templates can live with (no inline script)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.models import REPO

# Run in a fresh interpreter: settings are read from the environment once, at import.
BEHIND_PROXY_PROBE = """
import json, django
from io import StringIO
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client

out, err = StringIO(), StringIO()
call_command("check", deploy=True, fail_level="WARNING", stdout=out, stderr=err)
client = Client()
page = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
plain = Client().get("/accounts/login/")
health = Client().get("/healthz")
print(json.dumps({
    "check": out.getvalue() + err.getvalue(),
    "hsts": page.get("Strict-Transport-Security", ""),
    "csrf_cookie_secure": bool(page.cookies["csrftoken"]["secure"]),
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
    "plain": [plain.status_code, plain.get("Location", "")],
    "health": health.status_code,
}))
"""


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    # Not what a browser test of this session set for its in-process live server: a deployment
    # never has it, and the deploy check rightly refuses it (async.E001).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"} | {
        "DJANGO_SETTINGS_MODULE": "opsdash.settings",
        "OPSDASH_BEHIND_TLS_PROXY": "true",
        "OPSDASH_DEBUG": "false",
        "OPSDASH_DATA_DIR": str(tmp_path_factory.mktemp("proxied")),
        "OPSDASH_ALLOWED_HOSTS": "testserver,opsdash.example.com",
        "OPSDASH_SECRET_KEY": "k" * 20 + "-a-long-random-looking-secret-for-the-check-4f9e2c",
    }
    done = subprocess.run(
        [sys.executable, "-c", BEHIND_PROXY_PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_check_deploy_is_clean_behind_a_tls_proxy(behind_proxy):  # type: ignore[no-untyped-def]
    assert "no issues" in str(behind_proxy["check"]), behind_proxy["check"]


def test_behind_a_tls_proxy_pages_get_hsts_secure_cookies_and_https(behind_proxy):  # type: ignore[no-untyped-def]
    assert "max-age=31536000" in str(behind_proxy["hsts"])
    assert behind_proxy["csrf_cookie_secure"] and behind_proxy["session_cookie_secure"]
    status, location = behind_proxy["plain"]  # type: ignore[misc]
    assert status == 301 and location == "https://testserver/accounts/login/"
    assert behind_proxy["health"] != 301, "health checks from inside may stay on plain HTTP"


def test_every_page_carries_a_content_security_policy_without_inline_script(as_admin):  # type: ignore[no-untyped-def]
    response = as_admin.get("/models/")
    policy = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "ws://testserver" in directives["connect-src"], "the telemetry socket may connect"


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+=", re.I)
INLINE_STYLE_ELEMENT = re.compile(r"<style\b", re.I)


@pytest.mark.parametrize(
    "template",
    sorted((REPO / "templates").rglob("*.html")),
    ids=lambda p: str(p.relative_to(REPO / "templates")),
)
def test_no_template_needs_what_the_policy_forbids(template: Path) -> None:
    text = template.read_text()
    for pattern in (INLINE_SCRIPT, INLINE_HANDLER, INLINE_STYLE_ELEMENT):
        found = pattern.search(text)
        assert found is None, f"{found.group(0)!r}: the Content-Security-Policy blocks it"
