"""The Batches page: every Batch API job, its progress, cancel, and its files to download.

The figures come from the Batch API's own services (``opsdash.gateway.batches``), so this page
and ``GET /v1/batches/{id}`` cannot disagree. Rows still moving are refreshed every 2 s through
the page's ``table`` partial (htmx), the pattern of the Models page; no websocket.

Who: admins and operators watch batches (``RUN_PROMPTS``: the "run history" row of the role
matrix); cancelling is an admin's (``MANAGE_WORKFLOWS``, as revoking a workflow's key is); the
output, error and input files hold every request and its answer, so downloading them is for
those who may read the whole run ledger (``VIEW_LEDGER``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.db.models import Count, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.errors import Refusal
from opsdash.gateway import batches as batch_services
from opsdash.gateway.models import Batch, BatchFile, BatchStatus, ItemStatus
from opsdash.gateway.views import SNIPPET_MODEL_PLACEHOLDER
from opsdash.typing import AuthedRequest

#: The newest batches the page lists; older ones stay reachable through ``GET /v1/batches``.
SHOWN = 100
#: Failed lines listed on a batch's page; the error file has them all.
ERRORS_SHOWN = 200

# States in which the figures still move, so the page keeps asking for them.
LIVE = frozenset(
    {
        BatchStatus.VALIDATING,
        BatchStatus.IN_PROGRESS,
        BatchStatus.FINALIZING,
        BatchStatus.CANCELLING,
    }
)
# OpenAI allows cancelling only these; a finalizing batch is already writing its files.
CANCELLABLE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
FILES = {"output": "output_file", "errors": "error_file", "input": "input_file"}


def _batches() -> QuerySet[Batch]:
    # Not the files: their content is a BinaryField that can be many megabytes, and the page
    # only needs to know whether each exists (``output_file_id``).
    return Batch.objects.select_related("workflow", "model")


def _batch(public_id: str) -> Batch:
    return get_object_or_404(_batches(), public_id=public_id)


def duration(seconds: float | None) -> str:
    """An estimate of time left as a person reads it: "45 s", "12 min", "3 h 20 min"."""
    if seconds is None:
        return "—"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = round(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class BatchRow:
    """One batch as the page shows it: its progress and the share of the bar each part takes."""

    batch: Batch
    done: int
    failed: int
    total: int
    percent: float
    tokens_per_second: float | None
    eta: str
    live: bool
    cancellable: bool

    @property
    def done_width(self) -> float:
        return _share(self.done, self.total)

    @property
    def failed_width(self) -> float:
        return _share(self.failed, self.total)

    @property
    def not_run(self) -> int:
        """Lines an ended batch never answered (cancelled or expired before their turn)."""
        return 0 if self.live else max(0, self.total - self.done - self.failed)

    @property
    def status_label(self) -> str:
        return str(self.batch.status).replace("_", " ")


def _share(part: int, total: int) -> float:
    # A whole percent's precision is a pixel or two of the bar; one decimal keeps small
    # failures visible without printing noise into the style attribute.
    return round(100 * part / total, 1) if total else 0.0


def _row(batch: Batch) -> BatchRow:
    progress = batch_services.batch_progress(batch)
    live = batch.status in LIVE
    return BatchRow(
        batch=batch,
        done=progress.done,
        failed=progress.failed,
        total=progress.total,
        percent=progress.percent,
        tokens_per_second=progress.tokens_per_second,
        # Once a batch has ended nothing is left to wait for, whatever the estimate said.
        eta=duration(progress.eta_seconds) if live else "—",
        live=live,
        cancellable=batch.status in CANCELLABLE,
    )


def _snippet_model() -> str:
    first = LocalModel.objects.filter(status=ModelStatus.READY).order_by("slug").first()
    return first.slug if first else SNIPPET_MODEL_PLACEHOLDER


def _access(request: AuthedRequest) -> dict[str, bool]:
    return {
        "can_cancel": can(request.user, Cap.MANAGE_WORKFLOWS),
        "can_download": can(request.user, Cap.VIEW_LEDGER),
    }


@requires(Cap.RUN_PROMPTS)
@require_GET
def batch_list(request: AuthedRequest) -> HttpResponse:
    """Every batch, newest first, with its progress; an htmx request gets the table alone."""
    rows = [_row(batch) for batch in _batches()[:SHOWN]]
    context = {
        "rows": rows,
        "live": any(row.live for row in rows),
        "more": Batch.objects.count() > SHOWN,
        "shown": SHOWN,
        "base_url": request.build_absolute_uri("/v1"),
        "model_id": _snippet_model(),
        **_access(request),
    }
    if request.htmx:
        return render(request, "gateway/batches.html#table", context)
    return render(request, "gateway/batches.html", context)


@requires(Cap.RUN_PROMPTS)
@require_GET
def batch_detail(request: AuthedRequest, public_id: str) -> HttpResponse:
    """One batch: its progress, how many of its lines are in each state, and why lines failed
    (the refusals found when it was created, then each failed request's error)."""
    batch = _batch(public_id)
    counts = dict(
        batch.items.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    failed_items = batch.items.filter(status=ItemStatus.FAILED).order_by("line")
    context = {
        "row": _row(batch),
        "batch": batch,
        "counts": [(status.label, counts.get(status.value, 0)) for status in ItemStatus],
        "batch_errors": batch.errors or [],
        "failed_items": failed_items[:ERRORS_SHOWN],
        "failed_more": max(0, counts.get(ItemStatus.FAILED, 0) - ERRORS_SHOWN),
        **_access(request),
    }
    if request.htmx:
        return render(request, "gateway/batches_detail.html#progress", context)
    return render(request, "gateway/batches_detail.html", context)


@requires(Cap.MANAGE_WORKFLOWS)
@require_POST
def cancel(request: AuthedRequest, public_id: str) -> HttpResponse:
    """Cancel through the Batch API's own service: running requests stop, pending ones are
    never started, and the output and error files are written with what was done."""
    batch = _batch(public_id)
    try:
        batch = batch_services.cancel_batch(batch=batch, user=request.user)
    except Refusal as refusal:
        messages.error(request, refusal.reason)
    else:
        if batch.status == BatchStatus.CANCELLED:
            said = (
                "is cancelled: its output file holds the answered requests, its error file "
                "the failed ones and those never run"
            )
        else:
            said = (
                "is being cancelled: the requests running now finish, the others will not "
                "run; its output and error files appear here once it has ended"
            )
        messages.success(request, f"Batch {batch.public_id} {said}.")
    target = request.POST.get("next", "")
    if target == "detail":
        return redirect("gateway:batch", public_id=batch.public_id)
    return redirect(reverse("gateway:batches"))


@requires(Cap.VIEW_LEDGER)
@require_GET
def download(request: AuthedRequest, public_id: str, which: str) -> HttpResponse:
    """A batch's output, error or input file (JSONL, as ``GET /v1/files/{id}/content`` serves
    it), for a signed-in person: the ``/v1`` endpoint needs a workflow API key."""
    batch = _batch(public_id)
    field = FILES.get(which)
    if field is None:
        return HttpResponse(
            f"There is no “{which}” file: a batch has output, errors and input.",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    file_id: int | None = getattr(batch, f"{field}_id")
    if file_id is None:
        return HttpResponse(
            f"Batch {batch.public_id} has no {which} file yet: it is written when the batch "
            "ends (completed, cancelled, failed or expired).",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    filename, content = BatchFile.objects.values_list("filename", "content").get(pk=file_id)
    # bytes(): PostgreSQL hands a BinaryField back as a memoryview.
    response = HttpResponse(bytes(content), content_type="application/jsonl")
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=filename or f"{batch.public_id}_{which}.jsonl"
    )
    return response
