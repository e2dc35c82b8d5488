"""Headless Debian Chromium driven by Playwright against a live OpsDash server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    # One browser per test: Playwright's sync API holds an event loop while it runs, so it
    # must not outlive the test (async fixtures of later tests need the thread's loop).
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (as root).")
    # The live server runs in this process; Playwright's sync API must not see an event loop.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _prepare_server_process() -> None:
    """Runs in the forked daphne process: use the test database, start fresh pools."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync
    from channels.testing.live import set_database_connection

    from opsdash.catalog import jobs
    from opsdash.runs import runtime

    set_database_connection()
    # Threads do not survive a fork: start the pools the child inherited afresh.
    runtime._supervisor = None
    jobs._executor = None
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


def _application():  # type: ignore[no-untyped-def]
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from opsdash.asgi import application

    return ASGIStaticFilesHandler(application)


@pytest.fixture
def asgi_server(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """OpsDash served by daphne (HTTP and websockets) in a child process; yields its URL."""
    from daphne.testing import DaphneProcess

    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    # The child must not inherit an open SQLite handle: a connection shared across a fork
    # reads stale or broken pages. Close ours; both sides reconnect on their next query.
    connections.close_all()
    server = DaphneProcess("127.0.0.1", _application, setup=_prepare_server_process)
    server.start()
    while not server.ready.wait(timeout=1):
        if not server.is_alive():
            pytest.fail("the daphne test server stopped while starting")
    yield f"http://127.0.0.1:{server.port.value}"
    server.terminate()
    server.join(10)
