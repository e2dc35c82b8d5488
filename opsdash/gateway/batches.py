"""The Batch API's services: files of requests, batches of them, their progress and results.

A ``batch`` file is validated whole when it is uploaded (``create_file``): every line must be
a request the live endpoint would accept (each body goes through ``parsing.parse_chat`` /
``parse_completion``, so a line is refused for exactly what ``/v1`` refuses), all for one
endpoint and one ready model, with unique ``custom_id``s. A refusal names the line and stores
nothing. ``create_batch`` writes the batch and one ``BatchItem`` per line in one transaction;
the worker (``batch_worker``) runs them; when none is left, ``finish_batch`` writes the output
and error files in OpenAI's format.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.http import HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from inference.backends.base import MAX_TOKENS_LIMIT
from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.gateway import services
from opsdash.gateway.errors import limit_error, v1_error
from opsdash.gateway.models import (
    Batch,
    BatchFile,
    BatchItem,
    BatchStatus,
    Endpoint,
    FilePurpose,
    GatewayCall,
    ItemStatus,
    WorkflowKey,
)
from opsdash.gateway.parsing import (
    CompletionCall,
    InvalidRequest,
    parse_chat,
    parse_completion,
    parse_json,
)
from opsdash.gateway.responses import error_response
from opsdash.limits.services import LimitExceeded, admit
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.services import RunRefused, RunRequest, start_run

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
}
#: OpenAI's one completion window.
WINDOWS = {"24h": timedelta(hours=24)}
LINE_FIELDS = frozenset({"custom_id", "method", "url", "body"})
MAX_CUSTOM_ID = 512
#: Batches still to be worked on.
ACTIVE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
ENDED = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


class BatchRefused(Refusal):
    """A file or batch the Batch API refuses; ``reason`` names the line when one is at fault."""


@dataclass(frozen=True)
class RequestLine:
    line: int
    custom_id: str
    url: str
    body: dict[str, Any]
    call: CompletionCall


def _public_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def parse_requests(data: bytes) -> list[RequestLine]:
    """Every request line of a batch file, validated; ``BatchRefused`` names the first bad line.

    Blank lines are skipped (a trailing newline is usual); line numbers count them, so a
    refusal points where an editor shows the line.
    """
    if len(data) > settings.BATCH_FILE_MAX_BYTES:
        raise _too_large(len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BatchRefused(f"Line {line} is not UTF-8 text; save the file as UTF-8 JSONL.") from exc
    found: list[RequestLine] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(found) == settings.BATCH_MAX_REQUESTS:
            raise BatchRefused(
                f"Line {number}: the file holds more than {settings.BATCH_MAX_REQUESTS:,} "
                "requests, the most one batch takes (OPSDASH_BATCH_MAX_REQUESTS); split it."
            )
        request = _parse_line(number, raw)
        if request.custom_id in first_line:
            raise BatchRefused(
                f"Line {number}: custom_id '{request.custom_id}' is used again (first on line "
                f"{first_line[request.custom_id]}).",
                param="custom_id",
            )
        first_line[request.custom_id] = number
        if found and request.url != found[0].url:
            raise BatchRefused(
                f"Line {number} is for {request.url} but line {found[0].line} is for "
                f"{found[0].url}: a batch file holds requests for one endpoint.",
                param="url",
            )
        if found and request.call.model != found[0].call.model:
            raise BatchRefused(
                f"Line {number} asks for the model `{request.call.model}` but line "
                f"{found[0].line} for `{found[0].call.model}`: a batch runs one model.",
                param="body.model",
            )
        found.append(request)
    if not found:
        raise BatchRefused("The file holds no requests: write one JSON object per line.")
    return found


def _parse_line(number: int, raw: str) -> RequestLine:
    where = f"Line {number}"
    try:
        value = parse_json(raw.encode())
    except InvalidRequest as exc:
        raise BatchRefused(f"{where} is not valid JSON: {exc.reason}") from exc
    if not isinstance(value, dict):
        raise BatchRefused(f"{where} must be a JSON object with custom_id, method, url and body.")
    unknown = sorted(set(value) - LINE_FIELDS)
    if unknown:
        raise BatchRefused(
            f"{where} has the unknown field {unknown[0]!r}; a line holds custom_id, method, "
            "url and body only.",
            param=unknown[0],
        )
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchRefused(f"{where} needs a custom_id: a non-empty string.", param="custom_id")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise BatchRefused(
            f"{where}: custom_id is {len(custom_id)} characters; at most {MAX_CUSTOM_ID}.",
            param="custom_id",
        )
    if value.get("method") != "POST":
        raise BatchRefused(f'{where}: method must be "POST".', param="method")
    url = value.get("url")
    if url not in ENDPOINTS:
        raise BatchRefused(
            f"{where}: url must be /v1/chat/completions or /v1/completions; got {url!r}.",
            param="url",
        )
    body = value.get("body")
    if not isinstance(body, dict):
        raise BatchRefused(f"{where}: body must be a JSON object, the request.", param="body")
    if body.get("stream") is True:
        raise BatchRefused(
            f"{where}: stream must not be true; a batch's answers go to its output file.",
            param="body.stream",
        )
    parse = parse_chat if ENDPOINTS[url] == Endpoint.CHAT else parse_completion
    try:
        call = parse(body)
    except InvalidRequest as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        raise BatchRefused(f"{where}: {exc.reason}", param=param) from exc
    return RequestLine(line=number, custom_id=custom_id, url=url, body=body, call=call)


def _too_large(size: int) -> BatchRefused:
    limit = str(filesizeformat(settings.BATCH_FILE_MAX_BYTES)).replace("\xa0", " ")
    return BatchRefused(
        f"The file is {size:,} bytes; the Batch API takes files up to {limit} "
        "(OPSDASH_BATCH_FILE_MAX_BYTES). Split it into several batches.",
        code=Code.TOO_LARGE,
    )


def _model_for(first: RequestLine) -> Any:
    try:
        return services.ready_model(slug=first.call.model)
    except services.UnknownModel as exc:
        raise BatchRefused(
            f"Line {first.line}: {exc.reason} GET /v1/models lists the models you can use.",
            param="body.model",
        ) from exc


def create_file(*, key: WorkflowKey, filename: str, data: bytes, purpose: str) -> BatchFile:
    """Store an uploaded ``batch`` file once every line is valid; ``BatchRefused`` otherwise
    (nothing is stored)."""
    if purpose != FilePurpose.BATCH:
        raise BatchRefused(
            f'purpose must be "batch": this server takes files for the Batch API only; got '
            f"{purpose!r}.",
            param="purpose",
        )
    lines = parse_requests(data)
    _model_for(lines[0])
    return BatchFile.objects.create(
        public_id=_public_id("file-"),
        workflow=key.workflow,
        key=key,
        purpose=FilePurpose.BATCH,
        filename=(filename or "batch.jsonl")[:255],
        size_bytes=len(data),
        content=data,
        line_count=len(lines),
    )


def file_for(*, key: WorkflowKey, public_id: str) -> BatchFile | None:
    """The file ``public_id`` if it belongs to the key's workflow."""
    return BatchFile.objects.filter(public_id=public_id, workflow_id=key.workflow_id).first()


def batch_for(*, key: WorkflowKey, public_id: str) -> Batch | None:
    """The batch ``public_id`` if it belongs to the key's workflow."""
    return (
        Batch.objects.select_related("input_file", "output_file", "error_file")
        .filter(public_id=public_id, workflow_id=key.workflow_id)
        .first()
    )


def delete_file(*, key: WorkflowKey, file: BatchFile) -> None:
    """Delete a file no active batch reads; ``BatchRefused`` names the batch otherwise."""
    using = Batch.objects.filter(input_file=file).first()
    if using is not None:
        raise BatchRefused(
            f"The file {file.public_id} is the input of {using.public_id}; it stays as long as "
            "that batch's record does.",
            code=Code.CONFLICT,
        )
    Batch.objects.filter(output_file=file).update(output_file=None)
    Batch.objects.filter(error_file=file).update(error_file=None)
    file.delete()


def create_batch(
    *,
    key: WorkflowKey,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, Any] | None,
) -> Batch:
    """A batch of the file's requests, ``in_progress`` with all its items; ``BatchRefused``
    says what is wrong (nothing is written then)."""
    if not isinstance(input_file_id, str) or not input_file_id:
        raise BatchRefused("input_file_id is required: the id POST /v1/files answered.")
    if endpoint not in ENDPOINTS:
        raise BatchRefused(
            f"endpoint must be /v1/chat/completions or /v1/completions; got {endpoint!r}.",
            param="endpoint",
        )
    if completion_window not in WINDOWS:
        raise BatchRefused(
            f'completion_window must be "24h"; got {completion_window!r}.',
            param="completion_window",
        )
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise BatchRefused(
            "metadata must be an object of at most 16 string keys with string values.",
            param="metadata",
        )
    file = file_for(key=key, public_id=input_file_id)
    if file is None:
        raise BatchRefused(
            f"No file with id {input_file_id} exists for this workflow's keys; upload it with "
            "POST /v1/files first.",
            param="input_file_id",
        )
    if file.purpose != FilePurpose.BATCH:
        raise BatchRefused(
            f"The file {file.public_id} is a batch's {file.purpose} file, not requests; "
            'upload a file with purpose "batch".',
            param="input_file_id",
        )
    lines = parse_requests(bytes(file.content))
    if lines[0].url != endpoint:
        raise BatchRefused(
            f"Line {lines[0].line} is for {lines[0].url} but the batch is for {endpoint}.",
            param="endpoint",
        )
    model = _model_for(lines[0])
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.create(
            public_id=_public_id("batch_"),
            workflow=key.workflow,
            key=key,
            endpoint=endpoint,
            model=model,
            model_name=lines[0].call.model,
            input_file=file,
            completion_window=completion_window,
            status=BatchStatus.IN_PROGRESS,
            metadata=metadata or {},
            total=len(lines),
            in_progress_at=now,
            expires_at=now + WINDOWS[completion_window],
        )
        BatchItem.objects.bulk_create(
            (
                BatchItem(batch=batch, line=line.line, custom_id=line.custom_id, body=line.body)
                for line in lines
            ),
            batch_size=1000,
        )
        transaction.on_commit(_wake_worker)
    return batch


#: Called after the commit that creates or cancels a batch. ``batch_worker`` registers its
#: wake-up here (``on_new_work``): it imports this module, so this one does not import it.
_listeners: list[Callable[[], None]] = []


def on_new_work(listener: Callable[[], None]) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def _wake_worker() -> None:
    for listener in _listeners:
        listener()


def cancel_batch(*, batch: Batch, user: User | None = None) -> Batch:
    """Cancel: requests not started are cancelled now, the running ones finish, then the
    batch is ``cancelled`` with the files of what was done. An ended batch is refused."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch.pk)
        if batch.status in ENDED:
            raise BatchRefused(
                f"The batch {batch.public_id} is already {batch.status}; there is nothing to "
                "cancel.",
                code=Code.WRONG_STATUS,
            )
        if batch.status != BatchStatus.CANCELLING:
            batch.status = BatchStatus.CANCELLING
            batch.cancelling_at = timezone.now()
            batch.save(update_fields=["status", "cancelling_at"])
            BatchItem.objects.filter(batch=batch, status=ItemStatus.PENDING).update(
                status=ItemStatus.CANCELLED, finished_at=batch.cancelling_at
            )
            if user is not None:
                record(
                    actor=user,
                    action="batch.cancel",
                    target=Target.of(batch, type="batch", label=batch.public_id),
                )
    if not BatchItem.objects.filter(batch=batch, status=ItemStatus.RUNNING).exists():
        return finish_batch(batch=batch)
    transaction.on_commit(_wake_worker)
    return batch


# --- running items (the worker's side) ---------------------------------------------------------


def item_call(*, batch: Batch, item: BatchItem) -> CompletionCall:
    """The item's request, parsed as at upload."""
    parse = parse_chat if ENDPOINTS[batch.endpoint] == Endpoint.CHAT else parse_completion
    return parse(item.body)


def start_item_run(*, batch: Batch, item: BatchItem, call: CompletionCall) -> Run:
    """The run of one batch request: ``start_run`` with ``source=batch`` under the batch's
    workflow, recorded as a call of the batch's key. Raises ``UnknownModel`` / ``RunRefused``.
    """
    model = services.ready_model(slug=call.model)
    params = {"max_tokens": model.context_length or MAX_TOKENS_LIMIT} | call.params
    with transaction.atomic():
        run = start_run(
            request=RunRequest(
                model_id=model.pk,
                prompt=call.prompt,
                messages=call.messages,
                workflow=batch.workflow.slug,
                params=params,
            ),
            user=None,
            source=RunSource.BATCH,
        )
        if batch.key_id is not None:
            GatewayCall.objects.create(
                run=run,
                key_id=batch.key_id,
                endpoint=call.endpoint,
                stream=False,
                end_user=call.user[:256],
            )
        BatchItem.objects.filter(pk=item.pk).update(run=run)
    return run


def finish_item(
    *,
    item: BatchItem,
    status: ItemStatus,
    response: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    run: Run | None = None,
) -> None:
    """Record an item's outcome and count it on its batch, in one transaction."""
    now = timezone.now()
    with transaction.atomic():
        changed = BatchItem.objects.filter(pk=item.pk, status=ItemStatus.RUNNING).update(
            status=status, response=response, error=error, finished_at=now
        )
        if not changed:  # already settled (recovery put it back): count it once
            return
        counts: dict[str, Any] = {}
        if status == ItemStatus.DONE:
            counts["completed"] = F("completed") + 1
        elif status == ItemStatus.FAILED:
            counts["failed"] = F("failed") + 1
        if run is not None:
            counts["prompt_tokens"] = F("prompt_tokens") + (run.prompt_tokens or 0)
            counts["completion_tokens"] = F("completion_tokens") + (run.completion_tokens or 0)
        if counts:
            Batch.objects.filter(pk=item.batch_id).update(**counts)


def retry_item(*, item: BatchItem, server_stopped: bool = False) -> None:
    """Put a running item back to ``pending`` to be tried again. ``server_stopped``: the
    server, not the request, ended this attempt (a shutdown, the worker stopping, a rate
    limit's window), so it does not count towards ``MAX_ATTEMPTS``."""
    changes: dict[str, Any] = {"status": ItemStatus.PENDING}
    if server_stopped:
        changes["attempts"] = Greatest(F("attempts") - 1, 0)
    BatchItem.objects.filter(pk=item.pk, status=ItemStatus.RUNNING).update(**changes)


#: Tries of one request whose runner crashed or whose node was lost, before it fails.
MAX_ATTEMPTS = 5
#: Run outcomes worth another try: the server, not the request, ended them.
_RETRY_CODES = {Code.NO_NODE, Code.NODE_LOST, Code.CRASHED, Code.SHUTTING_DOWN}


def _fail_item(item: BatchItem, error: HttpResponse, run: Run | None = None) -> str:
    """Record ``item`` failed with the answer ``/v1`` gives for the same failure."""
    body = json.loads(error.content)
    found = body["error"]
    finish_item(
        item=item,
        status=ItemStatus.FAILED,
        response=item_response(run=run, status_code=error.status_code, body=body),
        error={"code": found.get("code") or found.get("type"), "message": found["message"]},
        run=run,
    )
    return "failed"


def begin_item(*, batch: Batch, item: BatchItem) -> tuple[Run, CompletionCall] | str:
    """Start the run of a taken item (``running``): the run and its request, or the outcome
    already recorded ("failed", or "retry" when it went back to pending)."""
    try:
        call = item_call(batch=batch, item=item)
    except InvalidRequest as exc:
        return _fail_item(item, exc.response())
    key = WorkflowKey.objects.filter(pk=batch.key_id).first() if batch.key_id else None
    if key is not None:
        try:
            admit(key=key)  # the key's and workflow's budgets and rate limits, as on /v1
        except LimitExceeded as exc:
            if exc.code == Code.RATE_LIMITED:
                retry_item(item=item, server_stopped=True)
                return "retry"
            return _fail_item(item, limit_error(exc))
    try:
        return start_item_run(batch=batch, item=item, call=call), call
    except services.UnknownModel as exc:
        return _fail_item(item, v1_error(exc.code, exc.reason, param="model"))
    except RunRefused as exc:
        if exc.code == Code.NO_NODE and item.attempts < MAX_ATTEMPTS:
            retry_item(item=item)
            return "retry"
        return _fail_item(item, v1_error(exc.code, exc.reason, param=exc.param))


def settle_item(*, batch: Batch, item: BatchItem, call: CompletionCall, run: Run) -> str:
    """Record the outcome of an item's finished run: "done", "failed" or "retry"."""
    from opsdash.gateway.v1 import completion_answer, failure_response  # v1 is the views

    run = Run.objects.select_related("model").get(pk=run.pk)
    if run.status == RunStatus.OK:
        body = completion_answer(
            endpoint=call.endpoint,
            model=call.model,
            run=run,
            system_fingerprint=services.system_fingerprint(backend=run.model.backend),
        )
        finish_item(
            item=item,
            status=ItemStatus.DONE,
            response=item_response(run=run, status_code=200, body=body),
            run=run,
        )
        return "done"
    # Stopped by the server, or the model busy with interactive work, which goes first: the
    # request waits for the idle capacity batches are for, however long that takes.
    stopped = run.status in {RunStatus.INTERRUPTED, RunStatus.CANCELLED}
    stopped = stopped or run.error_code == Code.BUSY
    if stopped or (run.error_code in _RETRY_CODES and item.attempts < MAX_ATTEMPTS):
        retry_item(item=item, server_stopped=stopped)
        return "retry"
    failure = failure_response(run, call)
    if failure is None:  # not reached: only an ok run has no failure answer
        failure = error_response(500, run.error or "The generation failed.", type="server_error")
    return _fail_item(item, failure, run)


def fail_pending(*, batch: Batch, code: str, message: str) -> int:
    """Fail every request not started yet with ``message`` (the model went away)."""
    now = timezone.now()
    with transaction.atomic():
        count = BatchItem.objects.filter(batch=batch, status=ItemStatus.PENDING).update(
            status=ItemStatus.FAILED,
            error={"code": code, "message": message},
            finished_at=now,
        )
        Batch.objects.filter(pk=batch.pk).update(failed=F("failed") + count)
    return count


def finish_batch(*, batch: Batch) -> Batch:
    """End a batch none of whose requests is running: write its output and error files and
    set its final status (cancelled, expired, or completed). Idempotent."""
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch.pk)
        if batch.status in ENDED:
            return batch
        if batch.status == BatchStatus.CANCELLING:
            final, leftover, why = BatchStatus.CANCELLED, "batch_cancelled", "was cancelled"
        elif batch.expires_at is not None and now >= batch.expires_at:
            final, leftover, why = BatchStatus.EXPIRED, "batch_expired", "expired"
        else:
            final, leftover, why = BatchStatus.COMPLETED, "", ""
        if leftover:
            BatchItem.objects.filter(
                batch=batch, status__in=[ItemStatus.PENDING, ItemStatus.RUNNING]
            ).update(status=ItemStatus.CANCELLED, finished_at=now)
            BatchItem.objects.filter(
                batch=batch, status=ItemStatus.CANCELLED, error__isnull=True
            ).update(
                error={
                    "code": leftover,
                    "message": f"This request was not run: the batch {why} before it started.",
                }
            )
        batch.finalizing_at = batch.finalizing_at or now
        output, errors = _result_lines(batch)
        if output:
            batch.output_file = _result_file(batch, "output", output)
        if errors:
            batch.error_file = _result_file(batch, "error", errors)
        batch.status = final
        setattr(batch, f"{final.value}_at", now)
        batch.claimed_by, batch.lease_until = "", None
        batch.save()
    return batch


def _result_file(batch: Batch, kind: str, lines: list[bytes]) -> BatchFile:
    data = b"".join(lines)
    return BatchFile.objects.create(
        public_id=_public_id("file-"),
        workflow_id=batch.workflow_id,
        key_id=batch.key_id,
        purpose=FilePurpose.BATCH_OUTPUT,
        filename=f"{batch.public_id}_{kind}.jsonl",
        size_bytes=len(data),
        content=data,
        line_count=len(lines),
    )


def _result_lines(batch: Batch) -> tuple[list[bytes], list[bytes]]:
    output: list[bytes] = []
    errors: list[bytes] = []
    items = BatchItem.objects.filter(batch=batch).exclude(
        status__in=[ItemStatus.PENDING, ItemStatus.RUNNING]
    )
    for item in items.order_by("line").iterator(chunk_size=1000):
        line: dict[str, Any] = {
            "id": f"batch_req_{batch.public_id.removeprefix('batch_')}_{item.line}",
            "custom_id": item.custom_id,
            "response": item.response,
            "error": item.error if item.status != ItemStatus.DONE else None,
        }
        encoded = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        (output if item.status == ItemStatus.DONE else errors).append(encoded)
    return output, errors


def item_response(*, run: Run | None, status_code: int, body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response`` of an output or error line (``request_id`` names the run)."""
    request_id = f"req_opsdash_{run.pk}" if run is not None else None
    return {"status_code": status_code, "request_id": request_id, "body": body}


# --- what clients see --------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProgress:
    done: int
    failed: int
    total: int
    tokens_per_second: float | None
    eta_seconds: float | None
    percent: float


def batch_progress(batch: Batch) -> BatchProgress:
    """How far a batch is: requests done and failed of ``total``, the rate it generates
    tokens at since it started, and, while it runs, the time left at its rate so far."""
    settled = batch.completed + batch.failed
    percent = 100.0 * settled / batch.total if batch.total else 100.0
    started = batch.in_progress_at
    ended = batch.completed_at or batch.cancelled_at or batch.expired_at or batch.failed_at
    tokens_per_second = eta = None
    if started is not None:
        elapsed = ((ended or timezone.now()) - started).total_seconds()
        if elapsed > 0 and batch.completion_tokens:
            tokens_per_second = batch.completion_tokens / elapsed
        left = batch.total - settled
        if ended is None and batch.status in ACTIVE and settled and elapsed > 0:
            eta = left * elapsed / settled
    return BatchProgress(
        done=batch.completed,
        failed=batch.failed,
        total=batch.total,
        tokens_per_second=tokens_per_second,
        eta_seconds=eta,
        percent=round(percent, 1),
    )


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def batch_object(batch: Batch) -> dict[str, Any]:
    """The OpenAI Batch object."""
    output = batch.output_file.public_id if batch.output_file_id and batch.output_file else None
    error = batch.error_file.public_id if batch.error_file_id and batch.error_file else None
    return {
        "id": batch.public_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model_name,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file.public_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": output,
        "error_file_id": error,
        "created_at": _ts(batch.created_at),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(batch.completed_at),
        "failed_at": _ts(batch.failed_at),
        "expired_at": _ts(batch.expired_at),
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(batch.cancelled_at),
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "usage": {
            "input_tokens": batch.prompt_tokens,
            "output_tokens": batch.completion_tokens,
            "total_tokens": batch.prompt_tokens + batch.completion_tokens,
        },
        "metadata": batch.metadata or None,
    }


def file_object(f: BatchFile) -> dict[str, Any]:
    """The OpenAI File object."""
    return {
        "id": f.public_id,
        "object": "file",
        "bytes": f.size_bytes,
        "created_at": _ts(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": None,
    }


def output_content(batch: Batch) -> bytes:
    """The output file's JSONL (empty until the batch has ended)."""
    return bytes(batch.output_file.content) if batch.output_file else b""


def batches_of(*, key: WorkflowKey, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """The key's workflow's batches, newest first, after the batch ``after``; and whether
    there are more."""
    found = Batch.objects.select_related("input_file", "output_file", "error_file").filter(
        workflow_id=key.workflow_id
    )
    if after:
        anchor = found.filter(public_id=after).first()
        if anchor is None:
            raise BatchRefused(f"No batch {after} exists for this workflow.", param="after")
        found = found.filter(
            Q(created_at__lt=anchor.created_at) | Q(created_at=anchor.created_at, id__lt=anchor.pk)
        )
    page = list(found.order_by("-created_at", "-id")[: limit + 1])
    return page[:limit], len(page) > limit
