"""An operator sends one prompt to two models at once and watches both answers stream in."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from opsdash.runs.models import Run, RunStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.fixtures.models import install_ready
from tests.fixtures.tinymodels import write_tiny_gguf_llama

pytestmark = [pytest.mark.e2e]


def test_each_models_answer_streams_into_its_own_panel(
    page: Page, asgi_server: str, operator, model_root, tmp_path
):
    # Two different files (the context length differs), so they are two models.
    install_ready(write_tiny_gguf_llama(tmp_path / "tiny-a.gguf"), model_root)
    install_ready(write_tiny_gguf_llama(tmp_path / "tiny-b.gguf", long_context=True), model_root)
    sign_in(page, asgi_server, "otto")
    page.goto(f"{asgi_server}/playground/compare/")
    expect(page.get_by_text("connected", exact=True)).to_be_visible(timeout=30_000)
    page.get_by_label("Prompt", exact=True).fill("hello world")
    page.get_by_text("Parameters").click()
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Run on all").click()

    panels = page.locator('[data-role="panels"] > section')
    expect(panels).to_have_count(2)
    for i in range(2):
        panel = panels.nth(i)
        expect(panel.locator('[data-stat="status"]')).to_have_text("ok", timeout=60_000)
        expect(panel.locator('[data-stat="completion"]')).to_have_text("12")
        expect(panel.locator('[data-role="text"]')).not_to_be_empty()
    expect(page.get_by_role("button", name="Run on all")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop all")).to_be_disabled()
    runs = list(Run.objects.order_by("id"))
    assert [run.status for run in runs] == [RunStatus.OK, RunStatus.OK]
    assert len({run.model_id for run in runs}) == 2
    assert runs[0].group is not None and runs[0].group == runs[1].group
    screenshot(page, "compare-1280")
