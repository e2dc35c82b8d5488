"""Helpers for the browser tests: sign in, keep a screenshot.

The browser, page and live-server fixtures are plugins (tests/fixtures/browser.py).
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

from tests.fixtures.personas import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def sign_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
