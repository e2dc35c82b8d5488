"""A Django upload handler that streams a model file straight into ``<models>/.partial``.

The upload path's body reaches it as a live stream (``opsdash.core.streamed_body``), so the
bytes are written once, into the partial file, hashed in the same pass; and the ASGI body guard
(``opsdash.core.bodylimits``) refuses an upload over the limit, or without credentials, before
any of it is read (``upload_body_rule``).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http.cookie import parse_cookie

from opsdash.accounts.services import user_for_token
from opsdash.catalog.transfer import (
    CHUNK_BYTES,
    PartialWriter,
    TransferError,
    Written,
    human_size,
)
from opsdash.core.bearer import scope_bearer_token
from opsdash.core.bodylimits import BodyRule, Scope
from opsdash.core.errors import Code, Refusal

UPLOAD_PATH = "/api/models/upload"
#: Room for the multipart framing and the small fields (name, model_type) around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(Refusal):
    default_code = Code.TOO_LARGE


def upload_limit() -> int:
    """The largest upload body accepted: the file limit plus its multipart framing."""
    return settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES


class StreamedModelFile(UploadedFile):
    """What the view receives: where the bytes are, how many, and their sha256."""

    def __init__(self, *, partial: Path, written: Written, name: str) -> None:
        super().__init__(file=None, name=name, size=written.size)
        self.partial = partial
        self.written = written


class PartialFileUploadHandler(FileUploadHandler):
    """Writes the one file field into a ``.partial`` file, hashing as it goes.

    Refuses bodies over ``OPSDASH_MAX_UPLOAD_BYTES`` by their declared length before writing,
    and stops as soon as more bytes than that arrive. A failed or abandoned upload removes its
    partial file.
    """

    chunk_size = CHUNK_BYTES

    def __init__(self, request: Any, partial: Path) -> None:
        super().__init__(request)
        self.partial = partial
        self.writer: PartialWriter | None = None
        self.error: Refusal | None = None

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        if content_length and content_length > upload_limit():
            raise UploadTooLarge(too_large_message())

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        if self.writer is not None:
            self.error = Refusal("Send one model file per upload.")
            raise StopUpload(connection_reset=True)
        self.writer = PartialWriter(self.partial, reserve=settings.MIN_FREE_BYTES)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self.writer is not None
        if self.writer.size + len(raw_data) > settings.MAX_UPLOAD_BYTES:
            self.error = UploadTooLarge(too_large_message())
            self.abort()
            raise StopUpload(connection_reset=True)
        try:
            self.writer.write(raw_data)
        except TransferError as exc:
            self.error = exc
            self.abort()
            raise StopUpload(connection_reset=True) from exc
        return None  # the bytes are ours: no later handler keeps a copy

    def file_complete(self, file_size: int) -> StreamedModelFile | None:
        if self.writer is None:
            return None
        written = self.writer.finish()
        return StreamedModelFile(
            partial=self.partial, written=written, name=self.file_name or "upload"
        )

    def upload_interrupted(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.partial.unlink(missing_ok=True)


def too_large_message() -> str:
    return (
        f"The upload is larger than the limit of {human_size(settings.MAX_UPLOAD_BYTES)} "
        f"(OPSDASH_MAX_UPLOAD_BYTES). Copy the file into a model root on the server and "
        f"install it by path instead."
    )


def upload_body_rule() -> BodyRule:
    """The body guard's rule for the upload endpoint: up to the upload limit, and only from a
    caller with a session or a personal token (the role is checked by the view, before it reads)."""
    return BodyRule(
        limit=upload_limit(),
        style="api",
        too_large=too_large_message(),
        credentials=caller_has_credentials,
        unauthorized="Sign in as an admin, or send Authorization: Bearer <token>, to upload.",
    )


async def caller_has_credentials(scope: Scope) -> bool:
    """A live signed-in session or an active personal token; read-only apart from the token's
    ``last_used_at``."""
    headers = {name.decode("latin1").lower(): value for name, value in scope.get("headers", [])}
    secret = scope_bearer_token(scope)
    if secret is not None:
        return await sync_to_async(user_for_token)(secret) is not None
    session_key = parse_cookie(headers.get("cookie", b"").decode("latin1")).get(
        settings.SESSION_COOKIE_NAME
    )
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return await sync_to_async(store.get)(SESSION_KEY) is not None
