"""An admin sets up a workflow and its key in a real browser; an OpenAI client then uses it."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import Page, expect

from opsdash.runs.models import Run
from opsdash.savings import catalogue
from opsdash.savings.models import Price
from tests.e2e.conftest import screenshot, sign_in
from tests.fixtures.models import install_ready

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


def test_an_admin_creates_a_workflow_and_key_and_an_openai_client_uses_it(
    page: Page, fresh_sync_thread, asgi_server: str, admin, model_root, tiny_gguf_path
):
    # Installed here, not with the tiny_model fixture: the model runs in the server process,
    # and that fixture's supervisor cleanup cannot run beside Playwright's event loop.
    tiny_model = install_ready(tiny_gguf_path, model_root)
    if not Price.objects.filter(provider="openai", model="gpt-4o-mini").exists():
        catalogue.seed_prices(Price)  # a transactional test loses the migration's rows
    sign_in(page, asgi_server, "ada")
    page.goto(f"{asgi_server}/gateway/")
    # The workflows lead; the ~2,000 px of snippets are folded under "Connect a client".
    expect(page.get_by_role("button", name="Create workflow")).to_be_visible()
    expect(page.locator("#snippet-python")).to_be_hidden()
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 1400, f"the gateway page is {height}px tall with its snippets folded"
    screenshot(page, "gateway-folded-1280")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "gateway-folded-1280-dark")
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page)
    screenshot(page, "gateway-folded-390-dark")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Connect a client").click()  # the lead's link opens the fold
    expect(page.locator("#snippet-python")).to_be_visible()
    expect(page.locator("#base-url")).to_have_text(f"{asgi_server}/v1")
    expect(page.locator("#snippet-python")).to_contain_text(f'model="{tiny_model.slug}"')
    expect(page.locator("#snippet-curl")).to_contain_text(f"curl {asgi_server}/v1/chat/completions")
    copy = page.locator("button[data-copy='#base-url']")
    copy.click()
    expect(copy).to_have_text("Copied")
    screenshot(page, "gateway-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page)
    screenshot(page, "gateway-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_label("Name").fill("Invoice extraction")
    # The baseline is picked from the price book: baseline.js narrows the models to the provider.
    page.get_by_label("Replaces provider").select_option("openai")
    model_select = page.get_by_label("Replaces model")
    expect(model_select.locator("optgroup")).to_have_count(1)
    expect(model_select.locator("optgroup")).to_have_attribute("label", "openai")
    model_select.select_option("gpt-4o-mini")
    page.get_by_role("button", name="Create workflow").click()
    page.wait_for_url(f"{asgi_server}/gateway/workflows/invoice-extraction/")
    page.get_by_label("Key name").fill("n8n production")
    page.get_by_role("button", name="Create API key").click()
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("odw_")
    screenshot(page, "gateway-key-created")

    client = openai.OpenAI(base_url=f"{asgi_server}/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model=tiny_model.slug, messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.choices[0].message.content
    run = Run.objects.get()
    assert run.workflow.slug == "invoice-extraction" and run.source == "gateway"

    page.goto(f"{asgi_server}/gateway/workflows/invoice-extraction/")
    expect(page.locator("#new-key")).to_have_count(0)
    row = page.locator("table.gateway-table tbody tr").first
    expect(row.locator("td[data-label=Requests]")).to_have_text("1")
    expect(row).to_contain_text(secret[:12])
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page)
    screenshot(page, "gateway-workflow-390")
