"""Installing a model file: the source, the bytes, the checks, the trial load, the rename.

Install path (DESIGN.md): bytes → ``<models>/.partial/<uuid>`` with sha256 in the same pass →
format sniffed → metadata → backend chosen → trial load in a subprocess → atomic rename →
``ready``. Any failure removes the partial file and leaves a ``failed`` record whose ``error``
says what to do. Duplicates (one live record per sha256) and cancelling a running install live
here too; what happens to a model once installed is in ``lifecycle``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from inference import backends, formats
from inference.errors import InferenceError
from inference.runtime.trial import trial_load
from opsdash.catalog import hooks, jobs
from opsdash.catalog.errors import InstallRefused, LifecycleError
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.catalog.transfer import (
    Guard,
    PartialWriter,
    Progress,
    TransferCancelled,
    TransferError,
    Written,
    check_free_space,
    copy_file,
    download,
)
from opsdash.core.audit import Target, record
from opsdash.core.errors import Code
from opsdash.core.processes import current_process, is_alive

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
# NUL and the other C0 controls: no file name or address has a use for them, and PostgreSQL
# refuses NUL in text, so they are refused with a sentence before anything is stored.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Records that hold their sha256: at most one of them per file (the database enforces it).
LIVE_STATUSES = (ModelStatus.INSTALLING, ModelStatus.READY, ModelStatus.RETIRED)
#: ``install_host`` of a model installed by a fleet node from its own disk: its file is there.
NODE_HOST_PREFIX = "node:"


@dataclass(frozen=True)
class InstallSource:
    """What to install: ``kind`` path or url (uploads arrive through ``install_uploaded``)."""

    kind: SourceKind
    location: str
    expected_sha256: str = ""
    name: str = ""
    model_type: str = ""


def partial_dir() -> Path:
    folder = settings.MODELS_DIR / ".partial"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_partial_path() -> Path:
    return partial_dir() / uuid.uuid4().hex


def audit(
    *,
    action: str,
    outcome: str,
    model: LocalModel | None = None,
    actor: User | None = None,
    detail: str = "",
) -> None:
    """One ``model.<action>`` entry in the audit log (``opsdash.core.audit``)."""
    target = Target.of(model, type="model", label=model.name) if model else Target(type="model")
    record(actor=actor, action=f"model.{action}", target=target, outcome=outcome, detail=detail)


# ----------------------------------------------------------------------------- validation


def resolve_server_path(raw: str, *, roots: Sequence[Path] | None = None) -> Path:
    """The real file behind ``raw``, which must lie inside one of ``OPSDASH_MODEL_ROOTS``.

    The check is made on the fully resolved path, so a symlink inside a root that points
    elsewhere is refused as firmly as a path outside it.
    """
    if "\x00" in raw:
        raise InstallRefused(
            f"The path {_shown(raw)} contains a NUL byte (\\0), which no file name can hold; "
            f"give the file's full path."
        )
    given = list(settings.MODEL_ROOTS if roots is None else roots)
    if not given:
        raise InstallRefused(
            "Installing from a server path is turned off: set OPSDASH_MODEL_ROOTS to the folders "
            "admins may install from."
        )
    real_roots = [root.resolve() for root in given]
    allowed = ", ".join(str(root) for root in given)
    candidate = Path(raw.strip()).expanduser()
    if ".." in candidate.parts:
        raise InstallRefused(f"The path {raw!r} contains '..'; give the file's full path instead.")
    if not candidate.is_absolute():
        raise InstallRefused(f"The path {raw!r} is not absolute; give the file's full path.")
    inside = any(candidate.is_relative_to(root) for root in [*given, *real_roots])
    if not inside:
        raise InstallRefused(
            f"{candidate} is outside the folders admins may install from ({allowed})."
        )
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError):
        raise InstallRefused(f"There is no file at {candidate}.") from None
    if not any(real.is_relative_to(root) for root in real_roots):
        raise InstallRefused(
            f"{candidate} is a link that leads outside the allowed folders (to {real}); "
            f"copy the file into one of {allowed} instead."
        )
    if not real.is_file():
        raise InstallRefused(f"{candidate} is not a regular file.")
    return real


def _shown(text: str) -> str:
    """``text`` quoted with control characters escaped, safe in a sentence and in the audit."""
    return repr(text[:300] + ("…" if len(text) > 300 else ""))


def _validate(source: InstallSource, *, roots: Sequence[Path] | None = None) -> InstallSource:
    checked = check_source(source, roots=roots)
    if checked.expected_sha256:
        _refuse_duplicate(checked.expected_sha256)
    return checked


def check_source(
    source: InstallSource, *, roots: Sequence[Path] | None = None, resolve_path: bool = True
) -> InstallSource:
    """The source, normalized, or ``InstallRefused`` with the sentence (no database): a path is
    resolved inside ``roots`` (``OPSDASH_MODEL_ROOTS``) unless ``resolve_path`` is False (a
    fleet node resolves it against its own roots)."""
    for label, value in (("name", source.name), ("model type", source.model_type)):
        if _CONTROL.search(value):
            raise InstallRefused(f"The {label} {_shown(value)} contains control characters.")
    sha = source.expected_sha256.strip().lower()
    if sha and not _SHA256.fullmatch(sha):
        raise InstallRefused("The expected sha256 must be 64 hexadecimal characters.")
    model_type = source.model_type.strip()
    if model_type and model_type not in formats.LEGACY_MODEL_TYPES:
        known = ", ".join(formats.LEGACY_MODEL_TYPES)
        raise InstallRefused(f"Unknown model type {model_type!r}; choose one of {known}.")
    location = source.location.strip()
    if source.kind == SourceKind.PATH and resolve_path:
        location = str(resolve_server_path(location, roots=roots))
    elif source.kind == SourceKind.PATH and not location:
        raise InstallRefused("Give the path to install from.")
    elif source.kind == SourceKind.URL:
        if _CONTROL.search(location):
            raise InstallRefused(
                f"The address {_shown(location)} contains control characters (a NUL byte or a "
                f"line break); give the address alone."
            )
        parts = urlsplit(location)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise InstallRefused(f"{location!r} is not an http:// or https:// address.")
    return InstallSource(source.kind, location, sha, source.name.strip(), model_type)


def _refuse_duplicate(sha256: str, *, exclude: int | None = None) -> None:
    installed = LocalModel.objects.filter(sha256=sha256, status__in=LIVE_STATUSES)
    existing = (installed.exclude(pk=exclude) if exclude else installed).first()
    if existing:
        raise _duplicate(existing)


def _duplicate(existing: LocalModel) -> InstallRefused:
    url = reverse("catalog:detail", args=[existing.pk])
    return InstallRefused(
        f"This file is already installed as “{existing.name}” ({existing.status}): {url}",
        code=Code.ALREADY_INSTALLED,
    )


def _claim_sha256(pk: int, sha256: str) -> None:
    """Record the file's sha256 on the installing record, or refuse it as a duplicate.

    A partial unique index (one live record per sha256, migration 0005) makes this atomic:
    of two installs of the same file that get here together, exactly one claim succeeds,
    whatever the timing, in SQLite and PostgreSQL alike.
    """
    for _ in range(3):
        try:
            with transaction.atomic():
                LocalModel.objects.filter(pk=pk).update(sha256=sha256)
            return
        except IntegrityError:
            holder = (
                LocalModel.objects.filter(sha256=sha256, status__in=LIVE_STATUSES)
                .exclude(pk=pk)
                .first()
            )
            if holder is not None:
                raise _duplicate(holder) from None
            # The holder failed or was deleted in between: the sha256 is free again.
    raise InstallRefused(
        "Another install of this file kept starting and stopping; try again.",
        code=Code.ALREADY_INSTALLED,
    )


def _unique_slug(name: str) -> str:
    base = slugify(name)[:180] or "model"
    slug, n = base, 2
    while LocalModel.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _default_name(location: str) -> str:
    tail = urlsplit(location).path if "://" in location else location
    stem = Path(tail).name
    for suffix in (".gguf", ".ggml", ".bin"):
        stem = stem.removesuffix(suffix)
    return stem or "model"


def _new_record(
    source: InstallSource, *, user: User | None, on_node: str = "", sha256: str = ""
) -> LocalModel:
    """The ``installing`` record; ``on_node``: a fleet node runs the install (its host is then
    ``node:<name>``, which no hub process's recovery takes for its own); ``sha256``: the file's,
    when its bytes are already in (an upload), claimed with the record itself, so a duplicate
    raises ``IntegrityError`` here and leaves no record."""
    name = source.name or _default_name(source.location)
    me = current_process()
    host: str = me.host
    pid: int | None = me.pid
    started_at: float | None = me.started_at
    if on_node:
        host, pid, started_at = f"{NODE_HOST_PREFIX}{on_node}", None, None
    with transaction.atomic():
        model = LocalModel.objects.create(
            name=name,
            slug=_unique_slug(name),
            source_kind=source.kind,
            source_ref=source.location,
            expected_sha256=source.expected_sha256,
            sha256=sha256,
            model_type=source.model_type,
            stage="queued",
            install_host=host,
            install_pid=pid,
            install_pid_started_at=started_at,
            installed_by=user,
        )
        audit(
            action="install.start",
            outcome="ok",
            model=model,
            actor=user,
            detail=f"from {source.kind}: {source.location}"
            + (f" on node {on_node}" if on_node else ""),
        )
    return model


def new_install_record(*, source: InstallSource, user: User | None, on_node: str) -> LocalModel:
    """Validate (without resolving a path: the node does) and create the ``installing`` record
    of an install that fleet node ``on_node`` runs; refusals are audited."""
    try:
        source = check_source(source, resolve_path=False)
        if source.expected_sha256:
            _refuse_duplicate(source.expected_sha256)
    except InstallRefused as exc:
        audit(
            action="install",
            outcome="refused",
            actor=user,
            detail=_printable(f"{source.kind} {source.location} on node {on_node}: {exc.reason}"),
        )
        raise
    return _new_record(source, user=user, on_node=on_node)


# ----------------------------------------------------------------------------- install


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _validate_audited(
    source: InstallSource, *, user: User | None, roots: Sequence[Path] | None = None
) -> InstallSource:
    """``_validate``, with a refusal written to the audit log before it is raised."""
    try:
        return _validate(source, roots=roots)
    except InstallRefused as exc:
        audit(
            action="install",
            outcome="refused",
            actor=user,
            detail=_printable(f"{source.kind} {source.location}: {exc.reason}"),
        )
        raise


def start_install(*, source: InstallSource, user: User | None) -> LocalModel:
    """Validate, create the ``installing`` record and run the install in the background.

    URL downloads run on their own lane of the job pool, so slow servers never hold up
    installs from a server path or an upload (see ``jobs``).
    """
    source = _validate_audited(source, user=user)
    model = _new_record(source, user=user)
    lane = jobs.Lane.DOWNLOAD if source.kind == SourceKind.URL else jobs.Lane.LOCAL
    jobs.submit(_acquire_and_finish, model.pk, source, lane=lane)
    return model


def install_model(
    *, source: InstallSource, user: User | None, roots: Sequence[Path] | None = None
) -> LocalModel:
    """The same install, run to the end in the calling thread (management commands).

    ``roots`` replaces ``OPSDASH_MODEL_ROOTS`` for files OpsDash itself fetched (the demo model).
    """
    source = _validate_audited(source, user=user, roots=roots)
    model = _new_record(source, user=user)
    _acquire_and_finish(model.pk, source)
    model.refresh_from_db()
    return model


def install_uploaded(
    *,
    partial: Path,
    written: Written,
    filename: str,
    name: str,
    model_type: str,
    user: User | None,
) -> LocalModel:
    """Finish an upload whose bytes ``UploadHandler`` already streamed into ``partial``.

    Its sha256 is known before any record exists, so a file that is already installed (or
    being installed) is refused here, naming the model that holds it, and leaves no failed
    record behind; only the later checks (format, trial load) can still fail the install.
    """
    source = InstallSource(SourceKind.UPLOAD, filename, "", name, model_type)
    try:
        source = _validate(source)
        _refuse_duplicate(written.sha256)
        try:
            model = _new_record(source, user=user, sha256=written.sha256)
        except IntegrityError:
            # Another install claimed the same file between the check above and the insert.
            holder = LocalModel.objects.filter(
                sha256=written.sha256, status__in=LIVE_STATUSES
            ).first()
            if holder is None:  # and it ended again at once: nothing holds the file now
                raise InstallRefused(
                    "Another install of this file started and stopped meanwhile; try again.",
                    code=Code.ALREADY_INSTALLED,
                ) from None
            raise _duplicate(holder) from None
    except InstallRefused as exc:
        partial.unlink(missing_ok=True)
        audit(
            action="install",
            outcome="refused",
            actor=user,
            detail=_printable(f"upload {filename}: {exc.reason}"),
        )
        raise
    LocalModel.objects.filter(pk=model.pk).update(bytes_done=written.size, bytes_total=written.size)
    jobs.submit(_finish_upload, model.pk, partial, written, lane=jobs.Lane.LOCAL)
    return model


# Guards of the installs this process runs, so that a cancel made here interrupts a read
# blocked on the network at once; a cancel made by another process is seen by the guard's
# poll of the record (about once a second).
_running_lock = threading.Lock()
_running: dict[int, Guard] = {}


def _cancel_reason(pk: int) -> str | None:
    row = LocalModel.objects.filter(pk=pk).values_list("status", "error").first()
    if row is None:
        return "The install's record is gone."
    status, error = row
    if status == ModelStatus.INSTALLING:
        return None
    return error or f"The install was ended ({status})."


@contextmanager
def _guarded(pk: int, *, source: str = "", download: bool = False) -> Iterator[Guard]:
    """A guard for install ``pk``: cancellation always, deadline and minimum rate for URLs."""
    guard = Guard(
        source=source,
        deadline_seconds=settings.DOWNLOAD_DEADLINE_SECONDS if download else 0,
        min_bytes_per_second=settings.DOWNLOAD_MIN_BYTES_PER_SECOND if download else 0,
        window_seconds=settings.DOWNLOAD_RATE_WINDOW_SECONDS,
        cancelled=lambda: _cancel_reason(pk),
    )
    with _running_lock:
        _running[pk] = guard
    try:
        yield guard
    finally:
        with _running_lock:
            _running.pop(pk, None)


class _ProgressReporter:
    """Writes progress to the record at most twice a second, however fast bytes arrive."""

    def __init__(self, pk: int, stage: str) -> None:
        self.pk, self.stage, self._last = pk, stage, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = timezone.now().timestamp()
        if now - self._last >= 0.5 or (total is not None and done >= total):
            self._last = now
            LocalModel.objects.filter(pk=self.pk, status=ModelStatus.INSTALLING).update(
                bytes_done=done, bytes_total=total, stage=self.stage
            )


def _acquire_and_finish(pk: int, source: InstallSource) -> None:
    is_url = source.kind == SourceKind.URL
    with _guarded(pk, source=source.location, download=is_url) as guard:
        _acquire(pk, source, guard)


def _finish_upload(pk: int, partial: Path, written: Written) -> None:
    with _guarded(pk) as guard:
        _finish(pk, partial, written, guard)


def acquire_file(
    source: InstallSource, partial: Path, *, guard: Guard, progress: Progress | None = None
) -> Written:
    """Copy (a checked path) or download (a URL) the source's bytes into ``partial``, hashing
    them in the same pass; ``TransferError`` or ``OSError`` when that fails. No database: a
    fleet node runs it too."""
    if source.kind == SourceKind.PATH:
        src = Path(source.location)
        check_free_space(partial.parent, needed=src.stat().st_size, reserve=settings.MIN_FREE_BYTES)
        writer = PartialWriter(partial, reserve=settings.MIN_FREE_BYTES, progress=progress)
        try:
            return copy_file(src, writer, guard=guard)
        finally:
            writer.close()
    check_free_space(partial.parent, needed=0, reserve=settings.MIN_FREE_BYTES)
    writer = PartialWriter(partial, reserve=settings.MIN_FREE_BYTES, progress=progress)
    try:
        return download(
            source.location,
            writer,
            timeout=settings.DOWNLOAD_TIMEOUT_SECONDS,
            attempts=settings.DOWNLOAD_ATTEMPTS,
            guard=guard,
        )
    finally:
        writer.close()


def _acquire(pk: int, source: InstallSource, guard: Guard) -> None:
    try:
        guard.check_cancelled()  # cancelled while it waited for a worker
    except TransferCancelled:
        return
    partial = new_partial_path()
    stage = "copying" if source.kind == SourceKind.PATH else "downloading"
    try:
        written = acquire_file(source, partial, guard=guard, progress=_ProgressReporter(pk, stage))
    except (TransferError, OSError) as exc:
        # A cancelled install is already failed with who cancelled it; _fail leaves it so.
        partial.unlink(missing_ok=True)
        reason = (
            exc.reason if isinstance(exc, TransferError) else f"Could not read the file: {exc}."
        )
        _fail(pk, reason)
        return
    _finish(pk, partial, written, guard)


@dataclass(frozen=True)
class Inspected:
    """What the checks found in a file that passed them (``inspect_file``)."""

    metadata: formats.ModelMetadata
    backend: str
    backend_reason: str
    trial_seconds: float | None
    trial_sample: str

    @property
    def extension(self) -> str:
        return ".gguf" if self.metadata.format == "gguf" else ".bin"


def inspect_file(
    partial: Path,
    *,
    written: Written,
    expected_sha256: str,
    model_type: str | None,
    guard: Guard,
    stage: Callable[[str], object] = lambda _: None,
    claim: Callable[[str], object] = lambda _: None,
    trial_timeout: float | None = None,
) -> Inspected:
    """Check the bytes in ``partial`` (the expected sha256, ``claim``ed as this install's),
    read its metadata, choose its backend and trial-load it; ``InstallRefused`` (or
    ``InferenceError``, ``TransferError``) with the sentence when it fails. No database of its
    own: a fleet node runs it too (``stage`` and ``claim`` are the caller's)."""
    guard.check_cancelled()
    stage("checking")
    if expected_sha256 and written.sha256 != expected_sha256:
        raise InstallRefused(
            f"The sha256 of the file is {written.sha256}, not the expected "
            f"{expected_sha256}. The file is corrupt or not the one you meant."
        )
    claim(written.sha256)
    metadata = formats.read_metadata(partial, model_type=model_type)
    verdict = backends.choose_backend(metadata)
    if verdict.backend is None:
        raise InstallRefused(verdict.reason)
    guard.check_cancelled()
    stage("trial load")
    trial = trial_load(
        partial,
        backend=verdict.backend,
        model_type=model_type,
        timeout=settings.TRIAL_LOAD_TIMEOUT_SECONDS if trial_timeout is None else trial_timeout,
        should_stop=guard.cancel_reason,
    )
    guard.check_cancelled()
    if not trial.ok:
        raise InstallRefused(f"The trial load in {verdict.backend} failed: {trial.error}")
    return Inspected(
        metadata, verdict.backend, verdict.reason, trial.seconds, trial.sample_text or ""
    )


def _finish(pk: int, partial: Path, written: Written, guard: Guard) -> None:
    """Check, inspect and trial-load the partial file, then move it into place."""
    model = LocalModel.objects.get(pk=pk)
    try:
        inspected = inspect_file(
            partial,
            written=written,
            expected_sha256=model.expected_sha256,
            model_type=model.model_type or None,
            guard=guard,
            stage=lambda stage: _set_stage(pk, stage),
            claim=lambda sha256: _claim_sha256(pk, sha256),
        )
        final = settings.MODELS_DIR / f"{model.slug}{inspected.extension}"
        os.replace(partial, final)  # atomic on one filesystem: .partial lives inside MODELS_DIR
    except (InstallRefused, InferenceError, TransferError) as exc:
        partial.unlink(missing_ok=True)
        _fail(pk, exc.reason)
        return
    except Exception as exc:  # noqa: BLE001 - any surprise must still leave a failed record
        logger.exception("install %s failed unexpectedly", pk)
        partial.unlink(missing_ok=True)
        _fail(pk, f"The install failed unexpectedly ({exc.__class__.__name__}: {exc}).")
        return
    became_ready = mark_ready(
        pk, file_path=str(final), size=written.size, sha256=written.sha256, inspected=inspected
    )
    if not became_ready:
        final.unlink(missing_ok=True)
        return
    # Other apps act on the new model (suites run against it) without the catalog importing
    # them; a failing hook is logged and never fails the install (hooks.py).
    hooks.run_after_install(model_id=pk)


def mark_ready(
    pk: int, *, file_path: str, size: int, sha256: str, inspected: Inspected, where: str = ""
) -> bool:
    """Install ``pk`` is ready with this file, audited; False if it had already ended (only an
    install still running becomes ready: one cancelled at the last moment stays failed).
    ``where``: the node that holds the file, for the audit entry."""
    metadata = inspected.metadata
    with transaction.atomic():
        became_ready = LocalModel.objects.filter(pk=pk, status=ModelStatus.INSTALLING).update(
            status=ModelStatus.READY,
            stage="",
            error="",
            file_path=file_path,
            size_bytes=size,
            sha256=sha256,
            bytes_done=size,
            bytes_total=size,
            format=metadata.format,
            format_version=metadata.format_version,
            architecture=metadata.architecture or "",
            parameter_count=metadata.parameter_count,
            quantization=metadata.quantization or "",
            context_length=metadata.context_length,
            vocab_size=metadata.vocab_size,
            tokenizer_model=metadata.tokenizer_model or "",
            chat_template=metadata.chat_template or "",
            metadata=metadata.as_dict(),
            backend=inspected.backend,
            backend_reason=inspected.backend_reason,
            trial_seconds=inspected.trial_seconds,
            trial_sample=inspected.trial_sample,
            installed_at=timezone.now(),
        )
        if became_ready:
            model = LocalModel.objects.get(pk=pk)
            audit(
                action="install",
                outcome="ok",
                model=model,
                actor=model.installed_by,
                detail=f"sha256 {sha256}, {size} bytes, runs on {inspected.backend}"
                + (f", on node {where}" if where else ""),
            )
    return bool(became_ready)


def claim_sha256(pk: int, sha256: str) -> None:
    """Record a finished file's sha256 on install ``pk``, or ``InstallRefused`` naming the
    model that already holds it (for installs a fleet node ran)."""
    _claim_sha256(pk, sha256)


def fail_install(pk: int, reason: str) -> None:
    """Fail install ``pk`` with ``reason`` (audited) unless it already ended."""
    _fail(pk, reason)


def _set_stage(pk: int, stage: str) -> None:
    LocalModel.objects.filter(pk=pk, status=ModelStatus.INSTALLING).update(stage=stage)


def _fail(pk: int, reason: str) -> None:
    """Fail install ``pk`` unless it already ended (a cancel, or recovery, got there first)."""
    with transaction.atomic():
        failed = LocalModel.objects.filter(pk=pk, status=ModelStatus.INSTALLING).update(
            status=ModelStatus.FAILED, stage="", error=reason
        )
        if not failed:
            return
        model = LocalModel.objects.get(pk=pk)
        audit(
            action="install",
            outcome="failed",
            model=model,
            actor=model.installed_by,
            detail=reason,
        )


def recover_interrupted_installs() -> int:
    """Fail installs whose process died, and remove partial files no live install owns.

    Only records started on this host by a process that is no longer running (or whose pid
    another process now holds) are touched, so several web processes sharing one database do
    not fail each other's installs, nor this process its own.
    """
    host = current_process().host
    recovered = 0
    for model in LocalModel.objects.filter(status=ModelStatus.INSTALLING, install_host=host):
        started_at = model.install_pid_started_at
        if is_alive(host=model.install_host, pid=model.install_pid, started_at=started_at):
            continue
        _fail(
            model.pk,
            "The install was interrupted (the server stopped while it ran). "
            "Install the file again.",
        )
        recovered += 1
    if not LocalModel.objects.filter(status=ModelStatus.INSTALLING, install_host=host).exists():
        for leftover in partial_dir().iterdir():
            leftover.unlink(missing_ok=True)
    return recovered


def cancel_install(*, model: LocalModel, user: User | None) -> LocalModel:
    """Stop an install: the record ends ``failed`` saying who cancelled, at once.

    The worker running it notices between chunks (at once in this process, within about a
    second from another one), stops its download, copy or trial load and removes its partial
    file. A queued install never starts.
    """
    with transaction.atomic():
        model = LocalModel.objects.select_for_update().get(pk=model.pk)
        if model.status != ModelStatus.INSTALLING:
            raise LifecycleError(
                f"“{model.name}” is {model.status}, not installing: there is no install to cancel.",
                code=Code.NOT_INSTALLING,
            )
        who = user.get_username() if user is not None else "the system"
        reason = f"Cancelled by {who}."
        stage = model.stage or "queued"
        model.status, model.stage, model.error = ModelStatus.FAILED, "", reason
        model.save(update_fields=["status", "stage", "error"])
        audit(
            action="cancel",
            outcome="ok",
            model=model,
            actor=user,
            detail=f"while {stage}, after {model.bytes_done} bytes",
        )
    with _running_lock:
        guard = _running.get(model.pk)
    if guard is not None:
        guard.interrupt(reason)
    return model
