"""The layout in Chromium: at 390 px the navigation folds behind a Menu disclosure that opens
onto every link with nothing off screen; dark mode follows the system and the header's toggle,
before the first paint; the charts redraw in the new colours; the main pages read in both
themes at both widths (screenshots in test-artifacts/layout-*)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from opsdash.runs.models import RunStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.savings.factories import finished_run, local_model, price, workflow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIGHT_BG = "rgb(245, 247, 250)"  # --bg of each palette, as the browser computes it
DARK_BG = "rgb(15, 20, 27)"
ADMIN_LINKS = [
    "Models",
    "Playground",
    "Runs",
    "Telemetry",
    "Nodes",
    "Savings",
    "Gateway",
    "Install",
    "Alerts",
    "Audit",
    "Users",
    "Sign-ins",
    "API tokens",
]


@pytest.fixture
def contexts(browser: Browser) -> Iterator[dict[str, object]]:
    made: list[BrowserContext] = []

    def new(width: int, scheme: str = "light", **options: object) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": 900},
            color_scheme=scheme,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        made.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        return page

    yield {"new": new}
    for context in made:
        context.close()


def _sideways(page: Page) -> int:
    """How far the page scrolls sideways, in CSS pixels."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def _background(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.documentElement).backgroundColor"))


@pytest.fixture
def ledger() -> None:
    """Enough for every main page to show something: priced workflows with a month of runs."""
    now = timezone.now()
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=now - timedelta(days=90))
    support = workflow("support-bot", "openai", "gpt-4o-mini", name="Support bot")
    notes = workflow("meeting-notes", name="Meeting notes")
    small, big = local_model("SmolLM2-135M"), local_model("Llama-3.2-1B")
    for i in range(30):
        finished_run(
            support if i % 3 else notes,
            small if i % 2 else big,
            started_at=now - timedelta(days=i % 20, hours=i % 5),
            prompt_tokens=800 + 41 * i,
            completion_tokens=120 + 17 * i,
            status=RunStatus.ERROR if i % 11 == 0 else RunStatus.OK,
        )


def test_at_390_px_the_menu_opens_onto_every_link_with_nothing_off_screen(
    contexts, admin, live_server
) -> None:  # type: ignore[no-untyped-def]
    page = contexts["new"](390)
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/")
    nav = page.get_by_role("navigation", name="Main")
    menu = page.locator("details.menu > summary")

    expect(menu).to_be_visible()
    expect(nav).to_be_hidden()
    assert _sideways(page) == 0
    screenshot(page, "layout-menu-closed-390")

    menu.click()
    links = nav.get_by_role("link")
    names = links.all_inner_texts()
    assert set(ADMIN_LINKS) <= set(names), names
    for link in links.all():
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert _sideways(page) == 0, "the open menu scrolls sideways"
    current = nav.locator("a[aria-current=page]")
    expect(current).to_have_text("Models")
    other = nav.get_by_role("link", name="Telemetry")
    assert current.evaluate("a => getComputedStyle(a).backgroundColor") != other.evaluate(
        "a => getComputedStyle(a).backgroundColor"
    ), "the current page stands out"
    # Who is signed in, and signing out, are in the open menu too.
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    screenshot(page, "layout-menu-open-390")

    other.click()
    page.wait_for_url(f"{live_server.url}/telemetry/")
    expect(nav).to_be_hidden()  # a new page starts with the menu closed
    menu.click()
    expect(nav.locator("a[aria-current=page]")).to_have_text("Telemetry")


def test_at_1280_px_the_links_are_a_row_in_the_header_with_no_menu_button(
    contexts, admin, live_server
) -> None:  # type: ignore[no-untyped-def]
    page = contexts["new"](1280)
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/")

    expect(page.locator("details.menu > summary")).to_be_hidden()
    header = page.locator("header.topbar").bounding_box()
    assert header is not None and header["height"] < 100, "one bar, not a stacked menu"
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == ADMIN_LINKS
    tops = set()
    for link in nav.get_by_role("link").all():
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280
        tops.add(round(box["y"]))
    assert len(tops) == 1, "an admin's links are one row"
    assert _sideways(page) == 0
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    screenshot(page, "layout-nav-1280")


def test_the_page_follows_the_system_until_the_toggle_chooses_and_the_choice_is_kept(
    contexts, admin, live_server
) -> None:  # type: ignore[no-untyped-def]
    page = contexts["new"](1280, "dark")
    violations: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", watch)
    # When <body> first appears, record the theme <html> has: the choice must be in place
    # before anything is painted.
    page.add_init_script(
        """new MutationObserver(function (changes, observer) {
             if (!document.body) return;
             window.__themeAtBody = document.documentElement.getAttribute("data-theme");
             observer.disconnect();
           }).observe(document, { childList: true, subtree: true });"""
    )
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/")
    toggle = page.get_by_label("Colour theme")

    assert _background(page) == DARK_BG, "no choice: the system's dark"
    expect(toggle).to_have_value("system")
    screenshot(page, "layout-theme-system-dark")

    toggle.select_option("light")
    assert _background(page) == LIGHT_BG
    assert page.evaluate("localStorage.getItem('opsdash-theme')") == "light"

    page.reload()
    assert page.evaluate("window.__themeAtBody") == "light", "applied before the body"
    assert _background(page) == LIGHT_BG
    expect(page.get_by_label("Colour theme")).to_have_value("light")

    page.get_by_label("Colour theme").select_option("system")
    assert _background(page) == DARK_BG
    assert page.evaluate("localStorage.getItem('opsdash-theme')") is None
    assert violations == []


def test_dark_can_be_chosen_on_a_light_system_and_without_scripts_the_system_decides(
    contexts, admin, live_server
) -> None:  # type: ignore[no-untyped-def]
    page = contexts["new"](1280, "light")
    page.goto(f"{live_server.url}/accounts/login/")
    assert _background(page) == LIGHT_BG
    page.get_by_label("Colour theme").select_option("dark")  # signed out too
    assert _background(page) == DARK_BG
    screenshot(page, "layout-login-dark")

    no_js = contexts["new"](1280, "dark", java_script_enabled=False)
    no_js.goto(f"{live_server.url}/accounts/login/")
    assert _background(no_js) == DARK_BG
    expect(no_js.locator(".theme-choice")).to_be_hidden()  # a control that could do nothing


def test_the_charts_redraw_in_the_new_theme(contexts, admin, ledger, asgi_server) -> None:  # type: ignore[no-untyped-def]
    page = contexts["new"](1280, "light")
    sign_in(page, asgi_server, "ada")
    for path, chart in (
        ("/savings/", "#savings-chart canvas"),
        ("/telemetry/", "[data-chart=cpu] canvas"),
    ):
        page.goto(f"{asgi_server}{path}")
        canvas = page.locator(chart).first
        expect(canvas).to_be_visible()
        canvas.evaluate("c => { c.dataset.drawnIn = 'light'; }")
        page.get_by_label("Colour theme").select_option("dark")
        # A new canvas, drawn with the dark palette's colours.
        expect(page.locator(chart).first).not_to_have_attribute("data-drawn-in", "light")
        expect(page.locator(chart).first).to_be_visible()
        page.get_by_label("Colour theme").select_option("light")


MAIN_PAGES = [
    ("models", "/models/"),
    ("playground", "/playground/"),
    ("telemetry", "/telemetry/"),
    ("savings", "/savings/"),
    ("gateway", "/gateway/"),
    ("alerts", "/notifications/"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_main_pages_read_at_both_widths_in_each_theme(
    contexts, admin, manager, ledger, asgi_server, scheme: str
) -> None:  # type: ignore[no-untyped-def]
    expected = DARK_BG if scheme == "dark" else LIGHT_BG
    for width in (1280, 390):
        page = contexts["new"](width, scheme)
        sign_in(page, asgi_server, "ada")
        for name, path in MAIN_PAGES:
            response = page.goto(f"{asgi_server}{path}")
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
            assert _background(page) == expected, path
            assert _sideways(page) == 0, f"{path} scrolls sideways at {width} px"
            screenshot(page, f"layout-{name}-{width}-{scheme}")
    # The 403 page, for a manager on an admin page.
    page = contexts["new"](390, scheme)
    sign_in(page, asgi_server, "mona")
    page.goto(f"{asgi_server}/models/install/")
    expect(
        page.get_by_text("This page is for admins. You are signed in as mona (manager).")
    ).to_be_visible()
    screenshot(page, f"layout-403-390-{scheme}")
