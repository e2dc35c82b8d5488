"""The install page: the server-path form is off, and says how to turn it on, without roots."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def _path_form(html: str) -> str:
    match = re.search(r'<form[^>]*data-testid="install-path".*?</form>', html, re.S)
    assert match, "no path form on the page"
    return match.group(0)


def test_without_model_roots_the_path_form_is_disabled_with_the_setting_named(as_admin, settings):
    settings.MODEL_ROOTS = []

    form = _path_form(as_admin.get("/models/install/").content.decode())

    assert "Installing from a server path is off: set <code>OPSDASH_MODEL_ROOTS</code>" in form
    assert re.search(r"<fieldset[^>]*\bdisabled\b", form), "the path input and button are live"
    # A request made anyway (a stale page, a script) gets the same sentence from the service.
    response = as_admin.post("/models/install/", {"source": "path", "path": "/srv/m.gguf"})
    assert response.status_code == 400
    assert "set OPSDASH_MODEL_ROOTS" in response.content.decode()


def test_with_model_roots_the_path_form_is_live_and_names_them(as_admin, model_root):
    form = _path_form(as_admin.get("/models/install/").content.decode())

    assert str(model_root) in form and "is off" not in form
    assert not re.search(r"<fieldset[^>]*\bdisabled\b", form)
