"""An operator watches an answer stream in, then stops a long one, in a real browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from opsdash.runs.models import Run, RunStatus
from tests.e2e.conftest import screenshot, sign_in
from tests.fixtures.models import install_ready
from tests.fixtures.tinymodels import write_tiny_gguf_llama

pytestmark = [pytest.mark.e2e]

#: The most the page's Max tokens field takes.
PAGE_MAX_TOKENS = 8192


def test_an_answer_grows_token_by_token_and_stop_cancels_the_next(
    page: Page, asgi_server: str, operator, model_root, tmp_path
):
    # A tiny model that never writes </s>, with a context far longer than any answer here:
    # every answer runs to its max tokens, and a long one outlasts the click on Stop.
    install_ready(write_tiny_gguf_llama(tmp_path / "tiny-long.gguf", long_context=True), model_root)
    sign_in(page, asgi_server, "otto")
    page.goto(f"{asgi_server}/playground/")
    expect(page.get_by_text("connected", exact=True)).to_be_visible(timeout=30_000)
    page.get_by_label("Raw prompt").check()
    page.get_by_label("Message", exact=True).fill("hello world")
    page.get_by_text("Parameters").click()
    page.get_by_label("Max tokens").fill("60")

    # Record every length the answer passes through, as the browser renders it.
    # Every status the panel shows, as the browser renders it: the first run loads the model.
    page.evaluate("""() => {
        window.statuses = [];
        const status = document.querySelector('[data-stat="status"]');
        new MutationObserver(() => window.statuses.push(status.textContent))
            .observe(status, {subtree: true, childList: true, characterData: true});
    }""")
    page.evaluate("""() => {
        window.lengths = [];
        new MutationObserver(() => {
            const b = document.querySelector('.msg.assistant .bubble');
            if (b) window.lengths.push(b.textContent.length);
        }).observe(document.querySelector('[data-role=transcript]'),
                   {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_role("button", name="Run").click()
    expect(page.locator('[data-stat="status"]')).to_have_text("ok", timeout=60_000)
    lengths = page.evaluate("window.lengths")
    final = len(page.locator(".msg.assistant .bubble").inner_text())
    intermediate = {n for n in lengths if 0 < n < final}
    assert len(intermediate) >= 2, f"the answer should grow in steps, saw lengths {lengths}"
    expect(page.locator('[data-stat="completion"]')).to_have_text("60")
    statuses = page.evaluate("window.statuses")
    assert statuses[:3] == ["running", "loading model", "running"], statuses
    screenshot(page, "playground-done")

    # Press Stop the moment the second answer's first text renders, from inside the page, so
    # no polling interval of the test stands between the first token and the click.
    page.evaluate("""() => {
        window.stoppedAt = null;
        const observer = new MutationObserver(() => {
            const streaming = document.querySelector('.msg.assistant .bubble.streaming');
            if (streaming && streaming.textContent.length > 0) {
                observer.disconnect();
                window.stoppedAt = streaming.textContent.length;
                document.querySelector('[data-role="stop"]').click();
            }
        });
        observer.observe(document.querySelector('[data-role=transcript]'),
                         {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_label("Max tokens").fill(str(PAGE_MAX_TOKENS))
    page.get_by_label("Message", exact=True).fill("hello again")
    page.get_by_role("button", name="Run").click()
    expect(page.locator('[data-stat="status"]')).to_have_text("cancelled", timeout=30_000)
    assert page.evaluate("window.stoppedAt"), "Stop was pressed once text had appeared"
    expect(page.locator(".msg.assistant .bubble").last).not_to_be_empty()
    run = Run.objects.order_by("-id").first()
    assert run is not None and run.status == RunStatus.CANCELLED
    assert 0 < run.completion_tokens < PAGE_MAX_TOKENS

    # "New conversation" leaves nothing of the last run: no text, no figures.
    expect(page.locator('[data-stat="prompt"]')).not_to_have_text("—")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".msg")).to_have_count(0)
    for stat in ("ttft", "tps", "prompt", "completion", "status"):
        expect(page.locator(f'[data-stat="{stat}"]')).to_have_text("—")
    screenshot(page, "playground-new-conversation")
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "playground-new-conversation-390-dark")
