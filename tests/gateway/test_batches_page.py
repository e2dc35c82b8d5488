"""The Batches page: each batch's progress as numbers and a bar, cancel for admins, the output
and error files downloadable with a session, live rows refreshed by htmx, and a batch's page
with its lines' states and errors.

Batches are written with the ORM (the worker's own tests drive real ones): what is under test
here is what a person sees and may do.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

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

pytestmark = pytest.mark.django_db

URL = "/gateway/batches/"
LINE = b'{"custom_id": "r1", "method": "POST", "url": "/v1/completions", "body": {}}\n'


@pytest.fixture
def model() -> LocalModel:
    return LocalModel.objects.create(
        name="SmolLM2 135M",
        slug="smollm2-135m",
        source_kind=SourceKind.PATH,
        source_ref="/x",
        status=ModelStatus.READY,
    )


def _file(workflow: Workflow, *, purpose: str, name: str, content: bytes) -> BatchFile:
    return BatchFile.objects.create(
        public_id=f"file-{name}",
        workflow=workflow,
        purpose=purpose,
        filename=name,
        size_bytes=len(content),
        content=content,
    )


def _batch(
    workflow: Workflow,
    model: LocalModel | None,
    public_id: str,
    *,
    status: str = BatchStatus.IN_PROGRESS,
    total: int = 50,
    completed: int = 0,
    failed: int = 0,
    started_ago: float | None = 10.0,
    completion_tokens: int = 0,
    items: dict[str, int] | None = None,
) -> Batch:
    now = timezone.now()
    batch = Batch.objects.create(
        public_id=public_id,
        workflow=workflow,
        endpoint="/v1/chat/completions",
        model=model,
        model_name=model.slug if model else "gone-model",
        input_file=_file(
            workflow, purpose=FilePurpose.BATCH, name=f"{public_id}.jsonl", content=LINE
        ),
        status=status,
        total=total,
        completed=completed,
        failed=failed,
        completion_tokens=completion_tokens,
        in_progress_at=now - timedelta(seconds=started_ago) if started_ago is not None else None,
    )
    line = 0
    for state, count in (items or {}).items():
        for _ in range(count):
            line += 1
            BatchItem.objects.create(
                batch=batch,
                line=line,
                custom_id=f"{public_id}-{line}",
                body={},
                status=state,
                error={
                    "code": "context_full",
                    "message": f"Line {line} is longer than the context.",
                }
                if state == ItemStatus.FAILED
                else None,
            )
    return batch


def _row(html: str, public_id: str) -> str:
    match = re.search(rf'<tr data-batch="{public_id}".*?</tr>', html, re.S)
    assert match, f"no row for {public_id}"
    return match.group(0)


def test_an_operator_sees_each_batch_newest_first_with_its_progress_in_numbers_and_a_bar(
    as_operator: Client, workflow: Workflow, model: LocalModel
) -> None:
    _batch(workflow, model, "batch_old", status=BatchStatus.COMPLETED, total=4, completed=4)
    _batch(
        workflow,
        model,
        "batch_new",
        total=50,
        completed=20,
        failed=5,
        completion_tokens=5000,
        started_ago=100.0,
    )

    response = as_operator.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("batch_new") < html.index("batch_old"), "newest first"

    row = _row(html, "batch_new")
    assert "Invoice extraction" in row and "SmolLM2 135M" in row
    assert 'class="status status-batch-in_progress"' in row and ">in progress<" in row
    assert "20 done" in row and "5 failed" in row and "50 total" in row and "50%" in row
    assert 'style="width: 40.0%"' in row, "the done segment is 20 of 50"
    assert 'style="width: 10.0%"' in row, "the failed segment is 5 of 50"
    assert 'aria-label="20 done, 5 failed of 50"' in row
    # 5,000 tokens in about 100 s; 25 lines settled in 100 s leaves 25: about 100 s more.
    tps = re.search(r'data-field="tokens-per-second">([\d.]+)<', row)
    assert tps and 40 <= float(tps.group(1)) <= 50.0
    assert 'data-field="eta">2 min<' in row

    # Operators watch; cancelling and the files (every request and its answer) are admins'.
    assert ">Cancel<" not in html and "Download output" not in html
    assert "Files when it ends" in row
    # A batch still moving keeps the table refreshing itself.
    assert 'hx-get="/gateway/batches/" hx-trigger="every 2s"' in html


def test_an_admin_may_cancel_only_what_is_still_running_and_download_the_ended_ones_files(
    as_admin: Client, workflow: Workflow, model: LocalModel
) -> None:
    _batch(workflow, model, "batch_running")
    _batch(workflow, model, "batch_validating", status=BatchStatus.VALIDATING, started_ago=None)
    done = _batch(
        workflow, model, "batch_done", status=BatchStatus.COMPLETED, total=2, completed=1, failed=1
    )
    done.output_file = _file(
        workflow, purpose=FilePurpose.BATCH_OUTPUT, name="out.jsonl", content=b"{}\n"
    )
    done.error_file = _file(
        workflow, purpose=FilePurpose.BATCH_OUTPUT, name="err.jsonl", content=b"{}\n"
    )
    done.save()

    html = as_admin.get(URL).content.decode()
    for live in ("batch_running", "batch_validating"):
        assert f'action="/gateway/batches/{live}/cancel/"' in _row(html, live)
    ended = _row(html, "batch_done")
    assert ">Cancel<" not in ended
    assert 'href="/gateway/batches/batch_done/output.jsonl"' in ended
    assert 'href="/gateway/batches/batch_done/errors.jsonl"' in ended
    assert ">—<" in ended, "an ended batch has no time left"


def test_cancel_stops_the_pending_lines_and_says_what_happens_to_the_answered_ones(
    as_admin: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(
        workflow,
        model,
        "batch_c",
        total=4,
        completed=1,
        items={ItemStatus.DONE: 1, ItemStatus.RUNNING: 1, ItemStatus.PENDING: 2},
    )

    response = as_admin.post(f"/gateway/batches/{batch.public_id}/cancel/", follow=True)
    assert response.redirect_chain[-1][0] == URL
    html = response.content.decode()
    assert "Batch batch_c is being cancelled" in html
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELLING
    assert batch.items.filter(status=ItemStatus.CANCELLED).count() == 2
    assert "status-batch-cancelling" in _row(html, "batch_c")
    assert f'action="/gateway/batches/{batch.public_id}/cancel/"' not in html, "no second cancel"


def test_cancelling_an_ended_batch_is_refused_with_a_sentence_and_changes_nothing(
    as_admin: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(workflow, model, "batch_e", status=BatchStatus.COMPLETED, total=1, completed=1)
    response = as_admin.post(f"/gateway/batches/{batch.public_id}/cancel/", follow=True)
    assert "already completed; there is nothing to cancel" in response.content.decode()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED


def test_operators_may_not_cancel_and_managers_do_not_see_the_page(
    as_operator: Client, as_manager: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(workflow, model, "batch_p")
    assert as_operator.post(f"/gateway/batches/{batch.public_id}/cancel/").status_code == 403
    batch.refresh_from_db()
    assert batch.status == BatchStatus.IN_PROGRESS
    assert as_operator.get(f"/gateway/batches/{batch.public_id}/input.jsonl").status_code == 403
    assert as_manager.get(URL).status_code == 403


def test_the_files_download_with_a_session_and_a_missing_one_says_when_it_will_exist(
    as_admin: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(workflow, model, "batch_f", status=BatchStatus.COMPLETED, total=1, completed=1)
    output = b'{"id": "batch_req_1", "custom_id": "r1", "response": {"status_code": 200}}\n'
    batch.output_file = _file(
        workflow, purpose=FilePurpose.BATCH_OUTPUT, name="batch_f_output.jsonl", content=output
    )
    batch.save()

    response = as_admin.get("/gateway/batches/batch_f/output.jsonl")
    assert response.status_code == 200
    assert response.content == output
    assert response["Content-Disposition"] == 'attachment; filename="batch_f_output.jsonl"'
    assert as_admin.get("/gateway/batches/batch_f/input.jsonl").content == LINE

    missing = as_admin.get("/gateway/batches/batch_f/errors.jsonl")
    assert missing.status_code == 404
    assert "has no errors file yet: it is written when the batch ends" in missing.content.decode()
    assert as_admin.get("/gateway/batches/batch_f/other.jsonl").status_code == 404


def test_an_htmx_refresh_gets_the_table_alone_and_stops_asking_once_every_batch_has_ended(
    as_operator: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(workflow, model, "batch_h", total=10, completed=3)
    live = as_operator.get(URL, headers={"HX-Request": "true"}).content.decode()
    assert live.lstrip().startswith('<div id="batches-table"')
    assert "<header" not in live
    assert 'hx-trigger="every 2s"' in live and "3 done" in live

    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.COMPLETED, completed=10)
    ended = as_operator.get(URL, headers={"HX-Request": "true"}).content.decode()
    assert "10 done" in ended and ">completed<" in ended
    assert "hx-trigger" not in ended, "nothing left to refresh"


def test_with_no_batch_the_page_shows_how_to_submit_one_with_the_openai_client(
    as_operator: Client, model: LocalModel
) -> None:
    html = as_operator.get(URL).content.decode()
    assert 'data-testid="batches-empty"' in html
    assert 'base_url="http://testserver/v1"' in html
    assert "client.files.create(" in html and "client.batches.create(" in html
    assert 'purpose="batch"' in html
    assert '"model": "smollm2-135m"' in html, "the JSONL example names a ready model"
    assert "hx-trigger" not in html


def test_a_batch_page_counts_its_lines_by_state_and_lists_why_each_failed(
    as_operator: Client, workflow: Workflow, model: LocalModel
) -> None:
    batch = _batch(
        workflow,
        model,
        "batch_d",
        total=6,
        completed=3,
        failed=2,
        items={ItemStatus.DONE: 3, ItemStatus.FAILED: 2, ItemStatus.PENDING: 1},
    )
    html = as_operator.get(f"/gateway/batches/{batch.public_id}/").content.decode()
    counts = re.search(r'data-testid="item-counts">.*?</table>', html, re.S)
    assert counts
    cells = dict(
        re.findall(r"<th scope=\"row\">(\w+)</th><td class=\"num\">(\d+)</td>", counts.group(0))
    )
    assert cells == {"Pending": "1", "Running": "0", "Done": "3", "Failed": "2", "Cancelled": "0"}
    errors = re.search(r'data-testid="batch-errors">.*?</section>', html, re.S)
    assert errors
    assert "Line 4 is longer than the context." in errors.group(0)
    assert "Line 5 is longer than the context." in errors.group(0)
    assert "batch_d-4" in errors.group(0)
    assert 'hx-trigger="every 2s"' in html, "a running batch's card refreshes"


def test_a_refused_batch_page_names_each_bad_line(as_operator: Client, workflow: Workflow) -> None:
    batch = _batch(workflow, None, "batch_r", status=BatchStatus.FAILED, total=0, started_ago=None)
    batch.errors = [
        {"code": "duplicate_custom_id", "message": "Line 3 repeats custom_id r1.", "line": 3},
    ]
    batch.save()
    html = as_operator.get(f"/gateway/batches/{batch.public_id}/").content.decode()
    assert "The batch was refused when it was created" in html
    assert "Line 3 repeats custom_id r1." in html and "duplicate_custom_id" in html
    assert "gone-model" in html, "the model the requests named, though it is not installed"


def test_operators_have_a_batches_link_and_whoever_has_the_gateway_finds_them_there(
    as_operator: Client, as_admin: Client, as_manager: Client
) -> None:
    html = as_operator.get(URL).content.decode()
    assert '<a href="/gateway/batches/" aria-current="page">Batches</a>' in html
    # Admins' header row is full at 1280 px: Batches is part of their Gateway section.
    admin_html = as_admin.get(URL).content.decode()
    assert '<a href="/gateway/" aria-current="page">Gateway</a>' in admin_html
    assert ">Batches</a>" not in admin_html.split("</nav>")[0]
    assert (
        '<a class="button" href="/gateway/batches/">Batches</a>'
        in as_admin.get("/gateway/").content.decode()
    )
    # Managers see the gateway but not the batches (their requests and answers).
    assert "/gateway/batches/" not in as_manager.get("/gateway/").content.decode()
