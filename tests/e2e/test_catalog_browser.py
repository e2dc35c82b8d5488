"""An admin installs models through the pages, in a real browser, and manages their lifecycle."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.catalog.helpers import place
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_admin_installs_a_model_from_a_path_and_sees_it_ready(
    page: Page, live_server, admin, model_root, tiny_gguf_path
):
    path = place(tiny_gguf_path, model_root, "browser-tiny.gguf")
    sign_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/models/")
    expect(page.get_by_text("No models yet.")).to_be_visible()
    page.get_by_role("link", name="Install a model").click()

    form = page.get_by_test_id("install-path")
    form.locator("input[name=path]").fill(str(path))
    form.get_by_role("button", name="Install from path").click()

    expect(page.get_by_test_id("model-status")).to_have_text("ready", timeout=60_000)
    expect(page.get_by_test_id("sha256")).to_have_text(_sha(tiny_gguf_path))
    expect(page.get_by_text("llama_cpp").first).to_be_visible()
    screenshot(page, "model-detail-ready")

    page.get_by_role("button", name="Retire").click()
    expect(page.get_by_test_id("model-status")).to_have_text("retired")
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_test_id("model-status")).to_have_text("ready")
    page.get_by_role("button", name="Retire").click()
    page.get_by_text("Delete file…").click()
    page.get_by_label("Type the slug to confirm").fill("browser-tiny")
    page.get_by_role("button", name="Delete the file").click()
    expect(page.get_by_test_id("model-status")).to_have_text("deleted")
    assert not path.with_name("browser-tiny.gguf").exists() or path.exists()  # the source stays

    # The catalog's old audit URL lands on the one audit log, filtered to models.
    page.goto(f"{live_server.url}/models/audit/")
    for action in ("model.install", "model.retire", "model.restore", "model.delete"):
        expect(page.get_by_role("cell", name=action, exact=True).first).to_be_visible()


def test_an_admin_uploads_a_model_with_progress_and_it_becomes_ready(
    page: Page, admin, tiny_ggml_path, asgi_server
):
    # The real server: the upload's body streams through the body guard to its view.
    sign_in(page, asgi_server, "ada")
    page.goto(f"{asgi_server}/models/install/")
    form = page.get_by_test_id("install-upload")
    form.locator("input[type=file]").set_input_files(str(tiny_ggml_path))
    form.get_by_text("Options").click()
    form.locator("select[name=model_type]").select_option("gpt2")
    form.get_by_role("button", name="Upload and install").click()

    expect(page.get_by_test_id("model-status")).to_have_text("ready", timeout=60_000)
    expect(page.get_by_text("ctransformers").first).to_be_visible()


def test_a_bad_path_is_explained_on_the_install_page(page: Page, live_server, admin):
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/install/")
    form = page.get_by_test_id("install-path")
    form.locator("input[name=path]").fill("/etc/passwd")
    form.get_by_role("button", name="Install from path").click()
    expect(page.get_by_test_id("install-error")).to_contain_text("outside the folders")


def _sha(path) -> str:  # type: ignore[no-untyped-def]
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
