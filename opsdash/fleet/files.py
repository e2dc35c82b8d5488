"""``GET /api/fleet/files/<sha256>``: the hub hands a node the file of a model placed on it.

An agent fetching a placement (``PlacementSpec.file_url``) authenticates with its node
credential (``Authorization: Bearer <credential>``), not a user: only an approved node, and only
for a ready model that is placed on it. A fetch cut short resumes with ``Range: bytes=N-``
(206 Partial Content); the agent checks the sha256 of the whole file itself.

Why not Django's ``FileResponse``: it ignores ``Range``, and under ASGI Django consumes a
synchronous iterator whole (``StreamingHttpResponse.__aiter__`` lists it) before sending a byte,
so a model file of gigabytes would sit in memory. This view streams from an asynchronous
generator that reads one chunk at a time in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from functools import wraps
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_http_methods

from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.bearer import bearer_token
from opsdash.fleet.models import Node, Placement, PlacementStatus
from opsdash.fleet.services import authenticate_node_credential

#: Marks a view opened by a node credential rather than a user's role (tests/test_permissions).
NODE_CREDENTIAL = "node_credential"
#: Bytes read from disk per step: large enough that the thread hop is cheap, small enough that
#: many parallel fetches hold little memory.
CHUNK_BYTES = 256 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

V = TypeVar("V", bound=Callable[..., Any])


def _refusal(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def node_credential(view: V) -> V:
    """Runs ``view(request, node, …)`` for an approved node's credential; 401 else."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        credential = bearer_token(request)
        if credential is None:
            return _refusal(
                401,
                "Model files are for nodes: send the node's credential as "
                "Authorization: Bearer <credential>.",
            )
        node = authenticate_node_credential(credential=credential)
        if node is None:
            # authenticate_node_credential answers only approved nodes, so a pending node's
            # credential lands here too; the sentence names both cases.
            return _refusal(
                401,
                "The hub does not accept this node credential: either its node is still "
                "waiting for an admin's approval (approve it on the Nodes page), or the node "
                "was deleted and must enroll again with a node token.",
            )
        return view(request, node, *args, **kwargs)

    wrapper.opsdash_cap = NODE_CREDENTIAL  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """The one byte range ``header`` asks of a ``size``-byte file, as ``(start, end)``
    inclusive; ``None`` to send the whole file (no header, or one this view does not serve:
    several ranges or another unit, which RFC 9110 lets a server ignore); ``False`` when the
    range is unsatisfiable (416)."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not header or match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid syntax: ignored, as RFC 9110 says
    if start >= size:
        return False
    return start, end


async def _stream(handle: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(handle.seek, start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, left))
            if not chunk:
                break  # the file shrank under us; the node's sha256 check will say so
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _model_for(node: Node, sha256: str) -> LocalModel | str:
    """The ready model with ``sha256`` placed on ``node``, or the sentence saying why not."""
    model = (
        LocalModel.objects.filter(sha256=sha256, status=ModelStatus.READY).first()
        if _SHA256.match(sha256)
        else None
    )
    if model is None:
        return f"No ready model on this hub has the sha256 {sha256[:64]}."
    placed = (
        Placement.objects.filter(model=model, node=node)
        .exclude(status=PlacementStatus.REMOVING)
        .exists()
    )
    if not placed:
        return f"“{model.name}” is not deployed to node {node.name}, so it cannot fetch it."
    return model


@require_http_methods(["GET", "HEAD"])
@node_credential
def model_file(request: HttpRequest, node: Node, sha256: str) -> HttpResponseBase:
    found = _model_for(node, sha256)
    if isinstance(found, str):
        return _refusal(404, found)
    path = Path(found.file_path)
    try:
        handle = path.open("rb")
    except OSError:
        return _refusal(
            404, f"The file of “{found.name}” is missing on the hub; install it there again."
        )
    size = os.fstat(handle.fileno()).st_size
    etag = f'"{found.sha256}"'
    asked = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range")
    wanted = parse_range(asked, size) if asked and if_range in (None, etag) else None
    if wanted is False:
        handle.close()
        response = _refusal(
            416, f"The range {asked[:80]!r} starts past the end of the file ({size} bytes)."
        )
        response["Content-Range"] = f"bytes */{size}"
        return response
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    length = max(0, end - start + 1)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, no-transform",
    }
    status = 200
    if isinstance(wanted, tuple):
        status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        handle.close()
        return HttpResponse(status=status, headers=headers)
    return StreamingHttpResponse(_stream(handle, start, length), status=status, headers=headers)
