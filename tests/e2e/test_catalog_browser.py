"""An admin installs models through the pages, in a real browser, and manages their lifecycle."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from tests.catalog.helpers import place
from tests.e2e.conftest import screenshot, sign_in
from tests.fixtures.models import install_ready

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
    first = page.url

    # The same file again: refused at once, naming the model, and no second (failed) row.
    page.goto(f"{asgi_server}/models/install/")
    form.locator("input[type=file]").set_input_files(str(tiny_ggml_path))
    form.get_by_role("button", name="Upload and install").click()
    status = page.locator("#upload-status")
    expect(status).to_contain_text("already installed as", timeout=30_000)
    expect(status).to_contain_text(first.removeprefix(asgi_server))
    page.goto(f"{asgi_server}/models/")
    expect(page.locator("table.models tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("failed-installs")).to_have_count(0)


def test_a_bad_path_is_explained_on_the_install_page(page: Page, live_server, admin):
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/install/")
    form = page.get_by_test_id("install-path")
    form.locator("input[name=path]").fill("/etc/passwd")
    form.get_by_role("button", name="Install from path").click()
    expect(page.get_by_test_id("install-error")).to_contain_text("outside the folders")


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


def test_failed_installs_sit_apart_with_their_reason_and_dismiss_says_dismissed(
    page: Page, live_server, admin, model_root, tiny_gguf_path
):
    # Not the tiny_model fixture: its supervisor cleanup cannot run beside Playwright's loop.
    tiny_model = install_ready(tiny_gguf_path, model_root)
    LocalModel.objects.create(
        name="notes-readme",
        slug="notes-readme",
        source_kind=SourceKind.UPLOAD,
        source_ref="README.gguf",
        status=ModelStatus.FAILED,
        error="README.gguf is not a model file: it starts with 'this', not a GGUF or GGML magic.",
    )
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/")

    models = page.get_by_test_id("models")
    expect(models).to_contain_text(tiny_model.name)
    expect(models).not_to_contain_text("notes-readme")
    failed = page.get_by_test_id("failed-installs")
    expect(failed.get_by_role("heading", name="Failed installs")).to_be_visible()
    expect(failed.get_by_test_id("failed-reason")).to_contain_text("is not a model file")
    _both_widths_and_themes(page, "models-failed")

    failed.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_text("Dismissed the failed install of “notes-readme”.")).to_be_visible()
    expect(page.get_by_test_id("failed-installs")).to_have_count(0)


def test_with_path_installs_off_the_path_form_is_disabled_and_says_why(
    page: Page, live_server, admin, settings
):
    settings.MODEL_ROOTS = []
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/models/install/")
    form = page.get_by_test_id("install-path")
    expect(form.get_by_test_id("path-off")).to_contain_text(
        "Installing from a server path is off: set OPSDASH_MODEL_ROOTS"
    )
    expect(form.locator("input[name=path]")).to_be_disabled()
    expect(form.get_by_role("button", name="Install from path")).to_be_disabled()
    # The other two ways stay open.
    expect(page.get_by_role("button", name="Upload and install")).to_be_enabled()
    expect(page.get_by_role("button", name="Download and install")).to_be_enabled()
    _both_widths_and_themes(page, "install-path-off")


def _sha(path) -> str:  # type: ignore[no-untyped-def]
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
