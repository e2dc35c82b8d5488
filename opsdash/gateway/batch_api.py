"""The Batch API on ``/v1``: ``/v1/files`` and ``/v1/batches``, as OpenAI defines them.

Plain async views like the rest of ``/v1`` (``v1.py``), so every answer, errors included, has
OpenAI's shape; a workflow key sees its workflow's files and batches only (another's are 404,
as unknown ones). The logic is in ``opsdash.gateway.batches``.

``POST /v1/files`` takes bodies far larger than the rest of ``/v1``: the body guard
(``opsdash.asgi``) gives it ``file_body_rule``, up to ``BATCH_FILE_MAX_BYTES``, and only from
a caller with a workflow key, checked before one byte of the body is read.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, HttpResponseBase, JsonResponse
from django.template.defaultfilters import filesizeformat

from opsdash.core.bearer import scope_bearer_token
from opsdash.core.bodylimits import BodyRule, Scope
from opsdash.gateway import batches
from opsdash.gateway.auth import KeyedRequest, gateway_endpoint
from opsdash.gateway.errors import v1_error
from opsdash.gateway.models import Batch, BatchFile, WorkflowKey
from opsdash.gateway.parsing import InvalidRequest, parse_json
from opsdash.gateway.responses import error_response

FILES_PATH = "/v1/files"
#: What a multipart body holds besides the file (boundaries, headers, the purpose field).
MULTIPART_ALLOWANCE = 64 * 1024
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


def file_body_rule() -> BodyRule:
    """The body guard's rule for ``POST /v1/files`` (see the module docstring)."""
    return BodyRule(
        limit=settings.BATCH_FILE_MAX_BYTES + MULTIPART_ALLOWANCE,
        style="openai",
        too_large=_too_large_sentence(),
        credentials=_has_workflow_key,
        unauthorized="Send a workflow API key as 'Authorization: Bearer <key>' to upload files.",
    )


def _too_large_sentence() -> str:
    limit = str(filesizeformat(settings.BATCH_FILE_MAX_BYTES)).replace("\xa0", " ")
    return (
        f"The file is larger than the Batch API takes ({limit}, OPSDASH_BATCH_FILE_MAX_BYTES); "
        "split it into several batches."
    )


async def _has_workflow_key(scope: Scope) -> bool:
    secret = scope_bearer_token(scope)
    if secret is None:
        return False
    return await sync_to_async(_active_key_exists)(secret)


def _active_key_exists(secret: str) -> bool:
    # Read-only: the view's own check counts the request on the key.
    from opsdash.gateway.services import _digest

    return WorkflowKey.objects.filter(digest=_digest(secret), revoked_at__isnull=True).exists()


def _refused(exc: batches.BatchRefused) -> JsonResponse:
    return v1_error(exc.code, exc.reason, param=exc.param)


def _no_file(file_id: str) -> JsonResponse:
    return error_response(
        404, f"No such File object: {file_id}. GET /v1/files lists this workflow's files."
    )


def _no_batch(batch_id: str) -> JsonResponse:
    return error_response(
        404, f"No such Batch object: {batch_id}. GET /v1/batches lists this workflow's batches."
    )


# --- files ---------------------------------------------------------------------------------------


@gateway_endpoint("GET", "POST")
async def files(request: KeyedRequest) -> HttpResponseBase:
    if request.method == "GET":
        found = await sync_to_async(_files_of)(request.gateway_key, request.GET.get("purpose"))
        return JsonResponse({"object": "list", "data": found, "has_more": False})
    return await sync_to_async(_upload)(request)


def _files_of(key: WorkflowKey, purpose: str | None) -> list[dict[str, Any]]:
    found = BatchFile.objects.filter(workflow_id=key.workflow_id).defer("content")
    if purpose:
        found = found.filter(purpose=purpose)
    return [batches.file_object(f) for f in found[:10_000]]


def _upload(request: KeyedRequest) -> HttpResponse:
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > settings.BATCH_FILE_MAX_BYTES + MULTIPART_ALLOWANCE:
        return error_response(413, _too_large_sentence(), code="request_too_large")
    try:
        upload = request.FILES.get("file")
        purpose = request.POST.get("purpose", "")
    except RequestDataTooBig:
        return error_response(413, _too_large_sentence(), code="request_too_large")
    if upload is None:
        return error_response(
            400,
            "Send the JSONL file as the multipart field 'file', with purpose \"batch\".",
            param="file",
        )
    if upload.size is not None and upload.size > settings.BATCH_FILE_MAX_BYTES:
        return _refused(batches._too_large(upload.size))
    try:
        created = batches.create_file(
            key=request.gateway_key,
            filename=upload.name or "batch.jsonl",
            data=upload.read(),
            purpose=purpose,
        )
    except batches.BatchRefused as exc:
        return _refused(exc)
    return JsonResponse(batches.file_object(created))


@gateway_endpoint("GET", "DELETE")
async def file_detail(request: KeyedRequest, file_id: str) -> HttpResponseBase:
    key = request.gateway_key
    found = await sync_to_async(batches.file_for)(key=key, public_id=file_id)
    if found is None:
        return _no_file(file_id)
    if request.method == "DELETE":
        try:
            await sync_to_async(batches.delete_file)(key=key, file=found)
        except batches.BatchRefused as exc:
            return _refused(exc)
        return JsonResponse({"id": file_id, "object": "file", "deleted": True})
    return JsonResponse(batches.file_object(found))


@gateway_endpoint("GET")
async def file_content(request: KeyedRequest, file_id: str) -> HttpResponseBase:
    found = await sync_to_async(batches.file_for)(key=request.gateway_key, public_id=file_id)
    if found is None:
        return _no_file(file_id)
    return HttpResponse(
        bytes(found.content),
        content_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{found.filename}"'},
    )


# --- batches -------------------------------------------------------------------------------------


@gateway_endpoint("GET", "POST")
async def batches_view(request: KeyedRequest) -> HttpResponseBase:
    if request.method == "GET":
        return await sync_to_async(_list)(request)
    try:
        body = parse_json(request.body)
    except InvalidRequest as exc:
        return exc.response()
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(413, f"The request body is over the {limit:,}-byte limit.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    unknown = sorted(set(body) - {"input_file_id", "endpoint", "completion_window", "metadata"})
    if unknown:
        return error_response(
            400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    try:
        created = await sync_to_async(batches.create_batch)(
            key=request.gateway_key,
            input_file_id=body.get("input_file_id", ""),
            endpoint=body.get("endpoint", ""),
            completion_window=body.get("completion_window", ""),
            metadata=body.get("metadata"),
        )
    except batches.BatchRefused as exc:
        return _refused(exc)
    return JsonResponse(await sync_to_async(_object)(created))


def _object(batch: Batch) -> dict[str, Any]:
    batch = Batch.objects.select_related("input_file", "output_file", "error_file").get(pk=batch.pk)
    return batches.batch_object(batch)


def _list(request: KeyedRequest) -> HttpResponse:
    raw = request.GET.get("limit", str(DEFAULT_LIST_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return error_response(
            400,
            f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}; got {raw!r}.",
            param="limit",
        )
    try:
        page, more = batches.batches_of(
            key=request.gateway_key, after=request.GET.get("after"), limit=limit
        )
    except batches.BatchRefused as exc:
        return _refused(exc)
    data = [batches.batch_object(b) for b in page]
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@gateway_endpoint("GET")
async def batch_detail(request: KeyedRequest, batch_id: str) -> HttpResponseBase:
    found = await sync_to_async(batches.batch_for)(key=request.gateway_key, public_id=batch_id)
    if found is None:
        return _no_batch(batch_id)
    return JsonResponse(batches.batch_object(found))


@gateway_endpoint("POST")
async def batch_cancel(request: KeyedRequest, batch_id: str) -> HttpResponseBase:
    found = await sync_to_async(batches.batch_for)(key=request.gateway_key, public_id=batch_id)
    if found is None:
        return _no_batch(batch_id)
    try:
        cancelled = await sync_to_async(batches.cancel_batch)(batch=found)
    except batches.BatchRefused as exc:
        return _refused(exc)
    return JsonResponse(await sync_to_async(_object)(cancelled))
