"""The Batches page in Chromium: a running batch's bar moves by itself (htmx every 2 s) and
ends with its files downloadable; an admin cancels a running one; at 1280 px light and dark
and at 390 px, during and after the job, nothing scrolls sideways
(test-artifacts/batches-*.png)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Page, expect

from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.gateway.models import (
    Batch,
    BatchFile,
    BatchItem,
    BatchStatus,
    FilePurpose,
    ItemStatus,
)
from opsdash.runs.models import Workflow
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTPUT = b'{"id": "batch_req_1", "custom_id": "invoice-1", "response": {"status_code": 200}}\n'


@pytest.fixture
def new_page(browser: Browser) -> Iterator[object]:
    made: list[BrowserContext] = []

    def new(width: int, scheme: str = "light") -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": 900},
            color_scheme=scheme,  # type: ignore[arg-type]
            accept_downloads=True,
        )
        made.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        return page

    yield new
    for context in made:
        context.close()


def _sideways(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def _file(workflow: Workflow, name: str, content: bytes, purpose: str) -> BatchFile:
    return BatchFile.objects.create(
        public_id=f"file-{name}",
        workflow=workflow,
        purpose=purpose,
        filename=name,
        size_bytes=len(content),
        content=content,
    )


def _batch(workflow: Workflow, model: LocalModel, public_id: str, **fields: object) -> Batch:
    batch = Batch.objects.create(
        public_id=public_id,
        workflow=workflow,
        endpoint="/v1/chat/completions",
        model=model,
        model_name=model.slug,
        input_file=_file(workflow, f"{public_id}.jsonl", b"{}\n", FilePurpose.BATCH),
        **fields,
    )
    return batch


@pytest.fixture
def job(db) -> Batch:  # type: ignore[no-untyped-def]
    """A 200-request job a quarter of the way through, beside an older finished one."""
    workflow = Workflow.objects.create(
        name="Invoice extraction",
        slug="invoice-extraction",
        baseline_provider="openai",
        baseline_model="gpt-4o-mini",
    )
    model = LocalModel.objects.create(
        name="SmolLM2 135M Instruct",
        slug="smollm2-135m-instruct",
        source_kind=SourceKind.PATH,
        source_ref="/x",
        status=ModelStatus.READY,
    )
    now = timezone.now()
    older = _batch(
        workflow,
        model,
        "batch_6f1c2a9e0b3d4e5f",
        status=BatchStatus.COMPLETED,
        total=40,
        completed=39,
        failed=1,
        completion_tokens=2400,
        in_progress_at=now - timedelta(minutes=30),
        completed_at=now - timedelta(minutes=28),
    )
    older.output_file = _file(workflow, "older_output.jsonl", OUTPUT, FilePurpose.BATCH_OUTPUT)
    older.error_file = _file(workflow, "older_errors.jsonl", b"{}\n", FilePurpose.BATCH_OUTPUT)
    older.save()
    batch = _batch(
        workflow,
        model,
        "batch_9a8b7c6d5e4f3a2b",
        status=BatchStatus.IN_PROGRESS,
        total=200,
        completed=46,
        failed=4,
        completion_tokens=3000,
        in_progress_at=now - timedelta(seconds=60),
    )
    BatchItem.objects.bulk_create(
        BatchItem(
            batch=batch,
            line=line,
            custom_id=f"invoice-{line}",
            body={},
            error=(
                {"code": "context_full", "message": "The prompt is longer than the context."}
                if 46 < line <= 50
                else None
            ),
            status=(
                ItemStatus.DONE
                if line <= 46
                else ItemStatus.FAILED
                if line <= 50
                else ItemStatus.PENDING
            ),
        )
        for line in range(1, 201)
    )
    return batch


def _shots(new_page, live_server, name: str) -> None:  # type: ignore[no-untyped-def]
    for width, scheme in ((1280, "light"), (1280, "dark"), (390, "light"), (390, "dark")):
        page = new_page(width, scheme)
        sign_in(page, live_server.url, "ada")
        page.goto(f"{live_server.url}/gateway/batches/")
        expect(page.get_by_test_id("batches")).to_be_visible()
        if width == 390:
            expect(page.locator("details.menu > summary")).to_be_visible()
        assert _sideways(page) == 0, f"{name} at {width} px {scheme} scrolls sideways"
        screenshot(page, f"batches-{name}-{width}-{scheme}")
        page.context.close()


def test_a_running_batch_moves_by_itself_then_offers_its_files(
    new_page, live_server, admin, job: Batch
) -> None:  # type: ignore[no-untyped-def]
    page = new_page(1280)
    sign_in(page, live_server.url, "ada")
    # An admin's Batches are in the Gateway section: its page links to them.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Gateway").click()
    page.get_by_role("main").get_by_role("link", name="Batches", exact=True).click()
    page.wait_for_url(f"{live_server.url}/gateway/batches/")

    row = page.locator(f"tr[data-batch={job.public_id}]")
    expect(row.locator("[data-field=done]")).to_have_text("46 done")
    expect(row.locator("[data-field=failed]")).to_have_text("4 failed")
    expect(row.locator("[data-field=status]")).to_have_text("in progress")
    done = row.locator(".seg-done").bounding_box()
    bar = row.locator(".batch-bar").bounding_box()
    assert done and bar and 0.2 < done["width"] / bar["width"] < 0.25, "46 of 200 is 23 %"
    expect(row.locator("[data-field=eta]")).not_to_have_text("—")
    _shots(new_page, live_server, "progress")

    # The worker moves on; the page follows without a reload.
    page.evaluate("window.__same_page = true")
    Batch.objects.filter(pk=job.pk).update(completed=150, completion_tokens=9000)
    expect(row.locator("[data-field=done]")).to_have_text("150 done", timeout=8_000)

    now = timezone.now()
    job.refresh_from_db()
    job.status = BatchStatus.COMPLETED
    job.completed = 196
    job.completed_at = now
    job.output_file = _file(job.workflow, "job_output.jsonl", OUTPUT, FilePurpose.BATCH_OUTPUT)
    job.error_file = _file(job.workflow, "job_errors.jsonl", b"{}\n", FilePurpose.BATCH_OUTPUT)
    job.save()
    expect(row.locator("[data-field=status]")).to_have_text("completed", timeout=8_000)
    expect(row.locator("[data-field=eta]")).to_have_text("—")
    assert page.evaluate("window.__same_page") is True, "refreshed in place, not reloaded"
    expect(page.locator("#batches-table")).not_to_have_attribute("hx-trigger", "every 2s")

    with page.expect_download() as download:
        row.get_by_role("link", name="Download output").click()
    assert download.value.suggested_filename == "job_output.jsonl"
    assert open(download.value.path(), "rb").read() == OUTPUT  # noqa: SIM115
    _shots(new_page, live_server, "done")


def test_an_admin_cancels_a_running_batch_from_its_page(
    new_page, live_server, admin, job: Batch
) -> None:  # type: ignore[no-untyped-def]
    page = new_page(390)
    sign_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/gateway/batches/{job.public_id}/")
    expect(page.get_by_test_id("item-counts")).to_contain_text("Pending")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_contain_text(f"Batch {job.public_id} is cancelled:")
    expect(page.locator("[data-field=status]")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    # 46 answered, 4 failed; the 150 never started are not run and say so.
    expect(page.locator("[data-field=not-run]")).to_have_text("150 not run")
    assert _sideways(page) == 0
    expect(page.get_by_test_id("batch-errors")).to_contain_text(
        "The prompt is longer than the context."
    )
    screenshot(page, "batches-cancelled-detail-390-light")
    wide = new_page(1280, "dark")
    sign_in(wide, live_server.url, "ada")
    wide.goto(f"{live_server.url}/gateway/batches/{job.public_id}/")
    expect(wide.locator("[data-field=status]")).to_have_text("cancelled")
    assert _sideways(wide) == 0
    screenshot(wide, "batches-cancelled-detail-1280-dark")
    job.refresh_from_db()
    assert job.status == BatchStatus.CANCELLED
    assert job.items.filter(status=ItemStatus.CANCELLED).count() == 150
