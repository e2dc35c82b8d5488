"""The Content-Security-Policy breaks nothing: Chromium reports no violation on any page, and
the behaviours moved out of inline handlers still work."""

from __future__ import annotations

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.e2e

PAGES = [
    "/models/",
    "/models/install/",
    "/playground/",
    "/playground/compare/",
    "/playground/suites/",
    "/playground/suites/new/",
    "/playground/history/",
    "/models/audit/",
    "/telemetry/",
    "/savings/",
    "/savings/prices/",
    "/gateway/",
    "/accounts/tokens/",
    "/accounts/lockouts/",
    "/api/docs",
]


def test_no_page_breaks_the_content_security_policy(page: Page, admin, asgi_server: str):  # type: ignore[no-untyped-def]
    violations: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(f"{page.url}: {message.text}")

    page.on("console", watch)
    sign_in(page, asgi_server, "ada")
    for path in PAGES:
        response = page.goto(f"{asgi_server}{path}")
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in (response.header_value("content-security-policy") or "")
        page.wait_for_load_state("networkidle")
    assert not violations, "\n".join(violations)


def test_the_savings_range_picker_still_submits_itself(page: Page, admin, asgi_server: str):  # type: ignore[no-untyped-def]
    sign_in(page, asgi_server, "ada")
    page.goto(f"{asgi_server}/savings/?from=2026-01-01&to=2026-01-31")
    page.select_option("select[name=range]", "7d")
    page.wait_for_url(lambda url: "range=7d" in url)
    assert "from=2026" not in page.url, "choosing a preset clears the custom dates"
    expect(page.locator("select[name=range]")).to_have_value("7d")
