"""Installs a fleet node runs from its own disk or a URL (the hub's ``install`` message).

``POST /api/models`` with ``"node"`` creates the hub's ``installing`` record and asks the node;
the node runs the catalog's own install pipeline without its database part: the path checked
inside the node's ``OPSDASH_MODEL_ROOTS`` (``install.check_source``), the bytes copied or
downloaded into ``<models>/.partial/<uuid>`` while hashed (``install.acquire_file``), then
sniffed, read, given a backend and trial-loaded (``install.inspect_file``), and renamed into
place; a failure leaves no partial file. Progress goes back as ``placement`` messages
(fetching with ``bytes_done``, loading), the end as one ``installed`` message:
``{model_id, status: ready | failed, error, metadata}``, which the hub turns into a ready (or
failed) model held by this node (``opsdash.fleet.agent_installs``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.errors import InferenceError
from opsdash.catalog.errors import InstallRefused
from opsdash.catalog.install import InstallSource, acquire_file, check_source, inspect_file
from opsdash.catalog.models import SourceKind
from opsdash.catalog.transfer import Guard, TransferError
from opsdash.fleet import protocol
from opsdash.fleet.agent_placements import is_id
from opsdash.fleet.agent_store import PARTIAL_DIR, HeldModel, ModelStore

logger = logging.getLogger("opsdash.fleet.agent")

#: How often an install's byte count is reported.
PROGRESS_SECONDS = 1.0

Emit = Callable[..., None]


class Installer:
    """The install jobs of one agent; ``emit(message_type, **fields)`` queues a message for
    the hub (placement progress, then ``installed``). One job per model id."""

    def __init__(
        self,
        *,
        name: str,
        store: ModelStore,
        emit: Emit,
        model_roots: tuple[Path, ...],
        trial_load_timeout: float,
    ) -> None:
        self.name = name
        self.store = store
        self.emit = emit
        self.model_roots = model_roots
        self.trial_load_timeout = trial_load_timeout
        self.jobs: dict[int, asyncio.Task[Any]] = {}
        self._guards: set[Guard] = set()

    def start(self, message: Mapping[str, Any]) -> None:
        model_id = message.get("model_id")
        if not is_id(model_id):
            logger.warning("an install without a model id was ignored: %r", message)
            return
        assert isinstance(model_id, int)
        job = self.jobs.get(model_id)
        if job is not None and not job.done():
            return  # under way; it reports when done
        self.jobs[model_id] = asyncio.get_running_loop().create_task(self._install(message))

    async def close(self) -> None:
        for guard in list(self._guards):
            guard.interrupt(f"The agent of node {self.name} stopped during the install.")
        if self.jobs:
            await asyncio.wait(list(self.jobs.values()), timeout=5)

    async def _install(self, message: Mapping[str, Any]) -> None:
        model_id = int(message["model_id"])
        loop = asyncio.get_running_loop()

        def placement(status: str, **fields: Any) -> None:  # from the install's thread
            loop.call_soon_threadsafe(
                lambda: self.emit(protocol.PLACEMENT, model_id=model_id, status=status, **fields)
            )

        try:
            result = await asyncio.to_thread(self._run, model_id, message, placement)
        except Exception as exc:  # a bug: the hub must still hear how it ended
            logger.exception("install of model %s failed on the agent", model_id)
            result = _failed(f"Unexpected error on node {self.name}: {exc}.")
        self.emit(protocol.INSTALLED, model_id=model_id, **result)

    def _run(
        self, model_id: int, message: Mapping[str, Any], placement: Callable[..., None]
    ) -> dict[str, Any]:
        """The pipeline, on a worker thread: what ``installed`` says."""
        kind = message.get("source")
        location = message.get("path") if kind == "path" else message.get("url")
        if kind not in ("path", "url") or not isinstance(location, str):
            return _failed("The hub's install message names no path or URL.")
        try:
            source = check_source(
                InstallSource(
                    kind=SourceKind(kind),
                    location=location,
                    expected_sha256=str(message.get("sha256") or ""),
                    name=str(message.get("name") or ""),
                    model_type=str(message.get("model_type") or ""),
                ),
                roots=self.model_roots,
            )
        except InstallRefused as exc:
            return _failed(f"On node {self.name}: {exc.reason}")
        partial = self.store.models_dir / PARTIAL_DIR / uuid.uuid4().hex
        partial.parent.mkdir(parents=True, exist_ok=True)
        is_url = source.kind == SourceKind.URL
        guard = Guard(
            source=source.location,
            deadline_seconds=settings.DOWNLOAD_DEADLINE_SECONDS if is_url else 0,
            min_bytes_per_second=settings.DOWNLOAD_MIN_BYTES_PER_SECOND if is_url else 0,
            window_seconds=settings.DOWNLOAD_RATE_WINDOW_SECONDS,
        )
        self._guards.add(guard)
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_SECONDS or (total is not None and done >= total):
                last[0] = now
                placement("fetching", bytes_done=done)

        try:
            placement("fetching", bytes_done=0)
            written = acquire_file(source, partial, guard=guard, progress=progress)
            inspected = inspect_file(
                partial,
                written=written,
                expected_sha256=source.expected_sha256,
                model_type=source.model_type or None,
                guard=guard,
                stage=lambda stage: placement("loading") if stage == "trial load" else None,
                trial_timeout=self.trial_load_timeout,
            )
            slug = str(message.get("slug") or "model")
            final = self.store.final_path(
                sha256=written.sha256, slug=slug, backend=inspected.backend
            )
            os.replace(partial, final)  # atomic: .partial lives inside the models folder
        except (InstallRefused, InferenceError, TransferError) as exc:
            partial.unlink(missing_ok=True)
            return _failed(f"On node {self.name}: {exc.reason}")
        except OSError as exc:
            partial.unlink(missing_ok=True)
            return _failed(f"On node {self.name}: could not read or write the file: {exc}.")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            self._guards.discard(guard)
        self.store.add(
            HeldModel(
                model_id=model_id,
                sha256=written.sha256,
                path=str(final),
                name=str(message.get("name") or slug),
                slug=slug,
                backend=inspected.backend,
                model_type=source.model_type,
                size_bytes=written.size,
                checked=True,  # the install's trial load was its check
            )
        )
        metadata = inspected.metadata.as_dict() | {
            "sha256": written.sha256,
            "size_bytes": written.size,
            "backend": inspected.backend,
            "backend_reason": inspected.backend_reason,
            "trial_seconds": inspected.trial_seconds,
            "trial_sample": inspected.trial_sample,
            "path": str(final),
        }
        return {"status": "ready", "error": "", "metadata": metadata}


def _failed(reason: str) -> dict[str, Any]:
    return {"status": "failed", "error": reason, "metadata": {}}
