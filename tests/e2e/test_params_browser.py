"""The playground's parameter inputs follow the one definition (opsdash.runs.params)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from opsdash.runs.params import BY_NAME
from tests.e2e.conftest import sign_in
from tests.factories import local_model

pytestmark = [pytest.mark.e2e]


def _validity(page: Page, name: str, value: str) -> tuple[bool, str]:
    field = page.locator(f'#run-form input[name="{name}"]')
    field.fill(value)
    field.dispatch_event("input")
    valid, message = field.evaluate("el => [el.checkValidity(), el.validationMessage]")
    return bool(valid), str(message)


def test_the_page_refuses_what_the_definition_refuses_before_anything_is_sent(
    page: Page, asgi_server: str, operator
):
    local_model()  # the form shows once a model is ready; nothing is generated here
    sign_in(page, asgi_server, "otto")
    page.goto(f"{asgi_server}/playground/")
    page.get_by_text("Parameters").click()

    top_p = BY_NAME["top_p"]
    valid, message = _validity(page, "top_p", "0")  # its minimum, which it excludes
    assert not valid and f"top_p must be {top_p.help}" in message
    assert _validity(page, "top_p", "0.5") == (True, "")
    max_tokens = int(BY_NAME["max_tokens"].maximum)
    assert _validity(page, "max_tokens", str(max_tokens))[0]
    assert not _validity(page, "max_tokens", str(max_tokens + 1))[0]
