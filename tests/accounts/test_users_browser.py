"""The Users pages in Chromium: an admin adds a colleague, copies the link, the colleague sets a
password with it and signs in; the admin deactivates them and their open browser is signed out.
Screenshots of the list, the invite result and the edit page at 1280 and 390 px, light and dark
(test-artifacts/users-*.png)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "a brand new pass phrase 42"


def _both_widths_and_themes(page: Page, name: str) -> None:
    """Screenshots at 1280 and 390 px, light and dark; none scrolls sideways."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
            screenshot(page, f"{name}-{width}-{scheme}")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_admin_invites_a_colleague_who_sets_a_password_and_is_later_deactivated(
    page: Page, browser: Browser, asgi_server: str, admin, operator, manager, settings
) -> None:
    settings.SMTP_HOST = ""
    User.objects.filter(pk=operator.pk).update(email="otto@example.com")
    sign_in(page, asgi_server, "ada")
    page.goto(f"{asgi_server}/accounts/users/")
    expect(page.get_by_test_id("users").locator("tbody tr")).to_have_count(3)
    _both_widths_and_themes(page, "users-list")

    form = page.locator("#add-user")
    form.locator("input[name=username]").fill("grace")
    form.locator("input[name=email]").fill("grace@example.com")
    form.get_by_label("manager").check()  # operator is ticked already
    form.get_by_role("button", name="Create user and link").click()

    expect(page.locator("h1")).to_contain_text("“grace” is created")
    expect(page.get_by_test_id("mailed")).to_contain_text("Mail is not configured")
    url = page.locator("#set-password-url").inner_text().strip()
    assert "/accounts/set-password/" in url
    _both_widths_and_themes(page, "users-invite-result")

    # Grace, in her own browser, opens the link, sets a password and signs in with it.
    grace = browser.new_context(viewport={"width": 390, "height": 900}).new_page()
    grace.goto(url.replace(settings.PUBLIC_URL, asgi_server))
    grace.fill("input[name=new_password1]", NEW_PASSWORD)
    grace.fill("input[name=new_password2]", NEW_PASSWORD)
    grace.get_by_role("button", name="Set password").click()
    expect(grace.locator(".flash")).to_contain_text("Your password is set")
    grace.fill("input[name=username]", "grace")
    grace.fill("input[name=password]", NEW_PASSWORD)
    grace.click("button[type=submit]")
    grace.wait_for_url(lambda u: "/accounts/login/" not in u)
    grace.goto(f"{asgi_server}/playground/")
    expect(grace.locator("h1")).to_be_visible()

    # The admin deactivates her; her next page is the sign-in page.
    page.goto(f"{asgi_server}/accounts/users/")
    page.get_by_role("link", name="grace").click()
    expect(page.locator("input[name=email]")).to_have_value("grace@example.com")
    # The header still names the signed-in admin's roles, not those of the user shown.
    expect(page.locator(".who .chip")).to_have_text(["admin"])
    _both_widths_and_themes(page, "users-edit")
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator(".flash")).to_contain_text("is deactivated: signed out everywhere")

    grace.goto(f"{asgi_server}/playground/")
    assert "/accounts/login/" in grace.url
    grace.context.close()
